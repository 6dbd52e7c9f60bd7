"""What wraps every method: slabs, 4D, the self-supervised degradation relation, the slice
profile estimate, the uncertainty map, and self-supervised SR on a real crop."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import AFFINES, make_affine, phantom
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.errors import MedsrError
from medsr.io import SourceInfo, make_volume
from medsr.methods import make_upscaler
from medsr.profile import estimate_profile
from medsr.selfsup import inplane_truth, resample_to_spacing
from medsr.transforms.degrade import slice_profile
from medsr.upscaling import run

DATA = Path(__file__).parent / "data"


def _thick(shape=(40, 36, 8), spacing=(1.0, 1.0, 3.0), seed=4):
    directions = AFFINES["oblique"][:3, :3] / np.linalg.norm(AFFINES["oblique"][:3, :3], axis=0)
    affine = make_affine(directions, spacing, (5.0, -3.0, 8.0))
    return make_volume(phantom(shape, seed=seed), affine, SourceInfo("nifti", "", "float32"))


@pytest.mark.parametrize("method", ["bspline", "default"])
def test_slabs_give_the_whole_volume_result(method):
    vol = _thick()
    frames, affine = vol.numpy(), np.asarray(vol.affine)
    outs = []
    for slab_voxels in (10**9, 5000):  # one slab, then slabs of a few planes
        up = make_upscaler(frames.shape[1:], affine, method=method, scale=(1, 1, 3),
                           modality="MR", device="cpu")
        out, _, _ = run(frames, up, slab_voxels=slab_voxels)
        outs.append(out)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4 * np.ptp(frames))


def test_4d_frames_are_upscaled_one_by_one():
    one, two = _thick(seed=1), _thick(seed=2)
    series = make_volume(np.stack([one[0].numpy(), two[0].numpy()]), one.affine.numpy(),
                         SourceInfo("nifti", "", "float32"))
    out = medsr.upscale(series, (1, 1, 3), method="bspline")
    assert out.shape == (2, 40, 36, 24)
    np.testing.assert_allclose(out[1].numpy(),
                               medsr.upscale(two, (1, 1, 3), method="bspline")[0].numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(out.affine.numpy(),
                               medsr.upscale(one, (1, 1, 3), method="bspline").affine.numpy())


def test_resample_to_spacing_averages_what_each_voxel_covers():
    x = np.arange(30, dtype=np.float32)[None, None, :].repeat(2, 0)
    y = resample_to_spacing(x, 2, 1.0, 3.0)
    np.testing.assert_allclose(y[0, 0], x[0, 0].reshape(10, 3).mean(-1))
    z = resample_to_spacing(x, 2, 1.0, 1.5)  # 1.5 mm bins: halves of voxels count half
    np.testing.assert_allclose(z[0, 0, :2], [(0 + 0.5 * 1) / 1.5, (0.5 * 1 + 2) / 1.5])


@pytest.mark.parametrize("pixel, thick, factor", [(0.8, 3.2, 3), (1.0, 4.5, 3), (0.7, 5.0, 5),
                                                 (1.0, 5.0, 2), (0.5, 7.0, 8)])
def test_self_supervised_pairs_mimic_the_thick_axis_in_voxel_units(pixel, thick, factor):
    """Degrading the in-plane truth ×f with a box one LR voxel wide is exactly a thick
    acquisition of that in-plane axis at the real slice spacing, whatever the pixel size."""
    rng = np.random.default_rng(0)
    scan = rng.normal(size=(120, 100, 12)).astype(np.float32)
    affine = np.diag([pixel, pixel, thick, 1.0])
    views = inplane_truth(scan, affine, 2, factor)
    assert [a for a, _, _ in views] == [0, 1]
    for a, plane, truth in views:
        assert plane == [0, 1] and truth.shape[a] % factor == 0
        moved = torch.from_numpy(np.moveaxis(truth, a, -1).reshape(1, -1, truth.shape[a]))
        lr = slice_profile(moved, 1, factor, factor, "box")[0].numpy()
        real = np.moveaxis(resample_to_spacing(scan, a, pixel, thick), a, -1)
        real = real.reshape(-1, real.shape[-1])[:, :lr.shape[-1]]
        np.testing.assert_allclose(lr, real, atol=1e-4)


def _texture(n=96, seed=0):
    """Isotropic 1/f texture inside a ball: the statistics the profile estimate assumes."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)
    kk = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    kk[0, 0, 0] = 1.0
    field = np.real(np.fft.ifftn(np.fft.fftn(rng.normal(size=(n, n, n))) / kk ** 1.5))
    g = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    r = np.sqrt(sum(x ** 2 for x in g))
    return ((field - field.min()) * (r < 0.9) + (r < 0.5) * field.std()).astype(np.float32)


@pytest.mark.parametrize("kind, width", [("box", 1.0), ("box", 1.5), ("gaussian", 1.0),
                                         ("gaussian", 1.6)])
def test_slice_profile_estimate(kind, width):
    vol, f = _texture(), 4
    lr = slice_profile(torch.from_numpy(vol)[None], 2, f, width * f, kind)[0].numpy()
    est = estimate_profile(lr, np.diag([1.0, 1.0, float(f), 1.0]), 2)
    assert abs(est.width - width) <= 0.4, est  # FWHM error, in slice spacings (README)


def test_slice_profile_estimate_needs_a_thick_axis():
    with pytest.raises(MedsrError, match="thick axis"):
        estimate_profile(np.zeros((20, 20, 20), np.float32), np.eye(4), 2)


def test_uncertainty_map_on_the_output_grid(tmp_path):
    vol = _thick()
    out, sd = medsr.upscale(vol, (1, 1, 3), method="default", uncertainty=True)
    assert sd.shape == out.shape and sd.dtype == torch.float32
    np.testing.assert_array_equal(sd.affine.numpy(), out.affine.numpy())
    assert float(sd.min()) > 0 and np.isfinite(sd.numpy()).all()
    cal = out.meta["medsr_uncertainty"]
    assert cal["k"] > 0 and min(cal["alpha"], cal["beta"], cal["gamma"]) >= 0
    path = tmp_path / "sd.nii.gz"
    medsr.save_volume(sd, path, dtype="float32")
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, out.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(img.get_fdata(), sd[0].numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(MedsrError, match="learned method"):
        medsr.upscale(vol, (1, 1, 3), method="bspline", uncertainty=True)


def test_consistency_is_on_by_default_and_can_be_turned_off():
    vol = _thick()
    on = medsr.upscale(vol, (1, 1, 3), method="default", noise_sd=0)  # exact
    off = medsr.upscale(vol, (1, 1, 3), method="default", consistency=False)
    assert on.meta["medsr_consistency_psnr"] > 80
    assert off.meta["medsr_consistency_psnr"] < on.meta["medsr_consistency_psnr"] - 20
    blocks = on[0].numpy().reshape(40, 36, 8, 3).mean(-1)
    np.testing.assert_allclose(blocks, vol[0].numpy(), atol=1e-2)


def test_cli_uncertainty_and_consistency_figure(tmp_path):
    path = tmp_path / "thick.nii.gz"
    medsr.save_volume(_thick(), path)
    result = CliRunner().invoke(app, ["upscale", str(path), "--method", "default", "-o",
                                      str(tmp_path / "o.nii.gz"), "--uncertainty",
                                      str(tmp_path / "sd.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "re-degraded output vs input" in result.stdout and "uncertainty (sd)" in result.stdout
    assert nib.load(str(tmp_path / "sd.nii.gz")).shape == (40, 36, 24)
    bad = CliRunner().invoke(app, ["upscale", str(path), "--method", "bspline", "-o",
                                   str(tmp_path / "b.nii.gz"), "--uncertainty",
                                   str(tmp_path / "b_sd.nii.gz")])
    assert bad.exit_code == 1 and "needs a learned method" in bad.output
    assert not (tmp_path / "b.nii.gz").exists()


@pytest.mark.slow
def test_self_supervised_beats_bspline_on_a_real_crop_with_target_unlike_the_pixel():
    """Colin27 crop, 1 mm pixels, 4.5 mm slices -> ×3 -> 1.5 mm (target ≠ pixel)."""
    img = medsr.load_volume(DATA / "colin27_t1_crop.nii.gz")
    thin = img[0].numpy()
    thick = resample_to_spacing(thin, 2, 1.0, 4.5)
    truth = resample_to_spacing(thin, 2, 1.0, 1.5)[:, :, : thick.shape[2] * 3]
    affine = np.asarray(img.affine).copy()
    affine[:3, 2] *= 4.5
    scan = make_volume(thick, affine, SourceInfo("nifti", "", "float32", modality="MR"))

    def error(method, **kw):
        out = medsr.upscale(scan, (1, 1, 3), method=method, **kw)
        out = out[0] if isinstance(out, tuple) else out
        return float(np.sqrt(np.mean((out[0].numpy() - truth) ** 2)))

    bspline = error("bspline")
    selfsup = error("self-supervised", self_supervised={"steps": 40, "seed": 0})
    assert selfsup < 0.97 * bspline, (selfsup, bspline)


@pytest.mark.parametrize("method", ["bspline", "default"])
def test_request_over_the_memory_limit_is_refused_before_work(method):
    with pytest.raises(MedsrError, match=r"needs about .* more than the .* allowed"):
        medsr.upscale(_thick(), (1, 1, 3), method=method, max_memory_gb=0.01)


def test_integer_cast_in_chunks_equals_a_whole_cast(monkeypatch):
    import medsr.io.values as values

    rng = np.random.default_rng(0)
    a = rng.normal(0, 30000, size=(9, 7, 5)).astype(np.float32)
    whole = np.clip(np.rint(a), -32768, 32767).astype(np.int16)
    monkeypatch.setattr(values, "CAST_CHUNK", 40)  # a couple of rows at a time
    np.testing.assert_array_equal(values.cast_to(a, "int16"), whole)
    np.testing.assert_array_equal(values.cast_to(a[:, ::2].T, "int16"), whole[:, ::2].T)


@pytest.mark.parametrize("name", ["o.nii.gz", "o.nrrd", "dicom_out"])
def test_written_output_records_method_profile_and_consistency(tmp_path, name):
    import pydicom
    import SimpleITK as sitk

    out = medsr.upscale(_thick(), (1, 1, 3), method="default")
    path = medsr.save_volume(out, tmp_path / name, dtype="float32" if "dicom" not in name
                             else "int16")
    if name.endswith(".nii.gz"):
        note = nib.load(str(path)).header["descrip"].item().decode()
    elif name.endswith(".nrrd"):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        note = reader.GetMetaData("medsr")
    else:
        note = pydicom.dcmread(next(path.iterdir())).DerivationDescription
    assert f"medsr {medsr.__version__} default" in note  # which medsr made it, and how
    assert "box 1.00x" in note and "re-degraded" in note
    psnr = float(note.split("re-degraded ")[1].split(" dB")[0])
    assert psnr == pytest.approx(out.meta["medsr_consistency_psnr"], abs=0.06)


def test_nifti_source_descrip_is_kept_and_the_note_goes_to_a_comment(tmp_path):
    src = tmp_path / "src.nii.gz"
    img = nib.Nifti1Image(phantom((40, 36, 8), seed=4), np.diag([1.0, 1.0, 3.0, 1.0]))
    img.header["descrip"] = b"scanner T1"
    img.to_filename(str(src))
    out = medsr.save_volume(medsr.upscale(src, (1, 1, 3), method="default"),
                            tmp_path / "o.nii.gz")
    header = nib.load(str(out)).header
    assert header["descrip"].item() == b"scanner T1"
    comments = [e.get_content() for e in header.extensions if e.get_code() == 6]
    assert comments and b"re-degraded" in comments[0]
