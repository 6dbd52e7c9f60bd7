"""Outputs larger than memory: disk-backed outputs, shrinking slabs, streamed writers."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import AFFINES, phantom

import medsr
from medsr import upscaling
from medsr.errors import MedsrError
from medsr.io import SourceInfo, make_volume
from medsr.methods import make_upscaler
from medsr.scratch import is_scratch, release, scratch_frames
from medsr.upscaling import run

#: writers: oblique and flipped; upscaling: oblique with a fine in-plane grid
OBLIQUE, THICK = AFFINES["oblique_flipped"], AFFINES["oblique"]


def _thick(shape=(40, 36, 8), seed=4):
    vol = phantom(shape, seed=seed)
    return make_volume(vol, THICK, SourceInfo("nifti", "", "int16"))


def test_scratch_frames_keep_their_values_after_release(tmp_path):
    a = scratch_frames(2, (5, 4, 3), tmp_path)
    assert a.shape == (2, 5, 4, 3) and a[1].flags.f_contiguous and is_scratch(a[1])
    values = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    a[...] = values
    release(a)
    np.testing.assert_array_equal(a, values)
    assert not list(tmp_path.iterdir())  # the file is unlinked: nothing is left behind
    assert not is_scratch(np.zeros(3)) and not is_scratch(values)


@pytest.mark.parametrize("method", ["bspline", "default"])
def test_outputs_on_disk_equal_outputs_in_memory(tmp_path, method):
    frames = _thick().numpy()
    results = []
    for scratch in (None, tmp_path):
        up = make_upscaler(frames.shape[1:], THICK, method=method, scale=(1, 1, 3),
                           modality="MR", device="cpu")
        out, sd, _ = run(frames, up, slab_voxels=5000, scratch=scratch,
                         uncertainty=up.learned)
        assert is_scratch(out) == (scratch is not None)
        results.append((out, sd))
    (mem, mem_sd), (disk, disk_sd) = results
    np.testing.assert_array_equal(disk, mem)
    if method == "default":
        np.testing.assert_array_equal(disk_sd, mem_sd)


def test_a_tight_memory_limit_puts_outputs_on_disk_and_shrinks_slabs(monkeypatch, tmp_path):
    vol = _thick(shape=(40, 120, 8))  # long along the slab axis: slabs thinner than halos
    expected, expected_sd = medsr.upscale(vol, (1, 1, 3), method="default", uncertainty=True)
    seen = {}
    original = upscaling.run

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(upscaling, "run", spy)
    monkeypatch.setattr(upscaling, "SCRATCH_OUTPUT_BYTES", 1)  # "large": on disk
    monkeypatch.setattr(upscaling, "MIN_SLAB_VOXELS", 1000)
    # one slab of the whole frame would need 3 GiB, a thin one (with its halo) about 1.3 GiB
    monkeypatch.setattr(upscaling, "SLAB_COPIES", 3 * 2**30 // (4 * 40 * 120 * 24))
    monkeypatch.setattr(upscaling, "ACTIVATION_BYTES", 0)
    monkeypatch.setattr(upscaling, "UNCERTAINTY_BYTES", 0)
    out, sd = medsr.upscale(vol, (1, 1, 3), method="default", uncertainty=True,
                            scratch=tmp_path, max_memory_gb=3.0)
    assert seen["scratch"] == tmp_path and seen["slab_voxels"] < 40 * 120 * 24
    assert is_scratch(out) and is_scratch(sd)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-4 * np.ptp(vol.numpy()))
    np.testing.assert_allclose(sd.numpy(), expected_sd.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out.affine.numpy(), expected.affine.numpy())
    # smallest slabs still too large for the limit: refused before any work, in one line
    monkeypatch.setattr(upscaling, "MIN_SLAB_VOXELS", 10**6)
    with pytest.raises(MedsrError, match=r"needs about .* more than the 3.00 GiB allowed"):
        medsr.upscale(vol, (1, 1, 3), method="default", max_memory_gb=3.0)


@pytest.mark.parametrize("dtype, frames", [("int16", 1), ("float32", 1), ("uint8", 3)])
def test_streamed_nifti_equals_nibabels_whole_array_write(tmp_path, monkeypatch, dtype, frames):
    from medsr.io import nifti

    rng = np.random.default_rng(1)
    shape = (9, 7, 6)
    data = scratch_frames(frames, shape, tmp_path)
    data[...] = rng.normal(60, 50, size=data.shape)
    vol = make_volume(data[0] if frames == 1 else data, OBLIQUE, SourceInfo("nifti", "", dtype))
    vol.meta["medsr_method"] = "default"
    monkeypatch.setattr(nifti, "CAST_CHUNK", 2 * 9 * 7)  # two slices at a time
    path = medsr.save_volume(vol, tmp_path / "o.nii.gz")
    written = nib.load(str(path))
    stored = data[0] if frames == 1 else np.moveaxis(data, 0, -1)
    expected = stored if dtype == "float32" else np.clip(np.rint(stored), *(
        (np.iinfo(dtype).min, np.iinfo(dtype).max))).astype(dtype)
    reference = nib.Nifti1Image(np.asarray(expected), written.affine, header=written.header)
    reference.to_filename(str(tmp_path / "ref.nii"))
    assert gzip.decompress(path.read_bytes()) == (tmp_path / "ref.nii").read_bytes()
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-5)


def test_dicom_written_a_slice_at_a_time_from_disk(tmp_path):
    rng = np.random.default_rng(2)
    disk = scratch_frames(1, (12, 10, 5), tmp_path)
    disk[...] = rng.normal(100, 300, size=disk.shape)
    vol = make_volume(disk[0], THICK, SourceInfo("nifti", "", "int16"))
    files = medsr.save_volume(vol, tmp_path / "dicom")
    back = medsr.load_volume(files)
    np.testing.assert_array_equal(back.numpy().squeeze(), np.rint(disk[0]))
    np.testing.assert_allclose(back.affine.numpy(), THICK, atol=1e-4)
    first = pydicom.dcmread(min(files.iterdir()))
    assert first.PixelRepresentation == 1 and first.RescaleSlope == 1


def test_a_scratch_folder_that_cannot_hold_the_output_is_one_clear_error(tmp_path):
    with pytest.raises(MedsrError, match=r"cannot make a .* scratch output in .*MEDSR_SCRATCH"):
        scratch_frames(1, (4, 4, 4), tmp_path / "missing")
