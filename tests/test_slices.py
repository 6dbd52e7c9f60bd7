"""Single slices (2D images): read from every format as a volume of one slice, upscaled in
their plane by the in-plane networks, written back on the right grid; and CT padding outside
the reconstruction circle, which learned methods read as air and put back in place."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import AFFINES, make_affine, phantom
from monai.data import MetaTensor
from test_report import Page

import medsr
from medsr.consistency import SliceProfile, degrade_axes
from medsr.geometry import target_grid
from medsr.padding import AIR_HU, fill_padding, padding_mask, restore_padding
from medsr.report import build_report


def _slice(affine, shape=(24, 20), seed=0, ct=False):
    values = phantom((*shape, 3), seed=seed)[..., 1:2]
    if ct:
        values = values * 2.0 - 1024.0  # 0..~1300 -> air..bone in HU
    return MetaTensor(torch.from_numpy(values)[None], affine=torch.as_tensor(affine))


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("fmt", ["slice.nii.gz", "slice.nrrd", "dicom"])
def test_a_slice_round_trips_through_every_writer(name, fmt, tmp_path):
    vol = _slice(AFFINES[name])
    out = medsr.save_volume(vol, tmp_path / fmt, fmt="dicom" if fmt == "dicom" else None)
    back = medsr.load_volume(out)
    assert tuple(back.shape) == (1, 24, 20, 1)
    got, want = back.affine.numpy(), AFFINES[name]
    assert np.allclose(got[:, [0, 1, 3]], want[:, [0, 1, 3]], atol=1e-3)  # every voxel's place
    # the slice axis: DICOM knows one slice's normal, not which way a one-slice stack runs
    sign = -1.0 if fmt == "dicom" and np.linalg.det(want[:3, :3]) < 0 else 1.0
    assert np.allclose(got[:3, 2], sign * want[:3, 2], atol=1e-3)
    assert np.allclose(back[0].numpy(), np.rint(vol[0].numpy()), atol=0.51)


def test_info_says_a_slice_is_upscaled_in_its_plane(tmp_path):
    from typer.testing import CliRunner

    from medsr.cli import app

    nib.Nifti1Image(phantom((12, 10, 3))[..., 1], np.eye(4)).to_filename(str(tmp_path / "s.nii"))
    shown = CliRunner().invoke(app, ["info", str(tmp_path / "s.nii")])
    assert shown.exit_code == 0 and "12×10×1" in shown.output
    assert "a single slice: upscaled in its plane only (--scale F F 1)" in shown.output


def test_2d_files_read_as_one_slice(tmp_path):
    image = phantom((12, 10, 3))[..., 1]
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    nib.Nifti1Image(image, affine).to_filename(str(tmp_path / "a.nii.gz"))
    flat = sitk.GetImageFromArray(image.T.copy())  # 2D: X across, Y down
    flat.SetSpacing((0.5, 0.7))
    sitk.WriteImage(flat, str(tmp_path / "a.nrrd"))
    for name in ("a.nii.gz", "a.nrrd"):
        vol = medsr.load_volume(tmp_path / name)
        assert tuple(vol.shape) == (1, 12, 10, 1), name
        assert np.allclose(np.linalg.norm(vol.affine.numpy()[:3, :2], axis=0), (0.5, 0.7))
        assert np.allclose(vol[0, ..., 0].numpy(), image, atol=1e-5)


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_a_slice_is_upscaled_in_plane_by_the_inplane_network(modality):
    affine = AFFINES["oblique_flipped"]
    vol = _slice(affine, ct=modality == "CT")
    out = medsr.upscale(vol, (2, 2, 1), method="default", modality=modality, device="cpu",
                        noise_sd=0)
    assert out.meta["medsr_method"] == "default in-plane"
    shape, expected, _ = target_grid((24, 20, 1), affine, scale=(2, 2, 1))
    assert tuple(out.shape[1:]) == shape == (48, 40, 1)
    assert np.allclose(out.affine.numpy(), expected, atol=1e-9)
    prof = SliceProfile("sinc") if modality == "MR" else SliceProfile("box", 1.0)
    again = degrade_axes(out[0].numpy(), [(0, 2, prof), (1, 2, prof)])
    assert np.allclose(again, vol[0].numpy(), atol=0.05)  # exact consistency
    # the default scale of a slice is its own plane's: square pixels, nothing to do
    square = _slice(make_affine(np.eye(3), (0.7, 0.7, 5.0), (0, 0, 0)), ct=modality == "CT")
    with pytest.raises(medsr.MedsrError, match="nothing to upscale"):
        medsr.upscale(square, method="default", modality=modality)
    with pytest.raises(medsr.MedsrError, match="in its plane only"):
        medsr.upscale(vol, (2, 2, 2), method="bspline")
    line = MetaTensor(torch.zeros(1, 24, 1, 1), affine=torch.as_tensor(affine))
    with pytest.raises(medsr.MedsrError, match="a line"):
        medsr.upscale(line, (2, 1, 1), method="bspline")


def test_the_default_scale_of_a_slice_ignores_its_thickness():
    affine = make_affine(np.eye(3), (0.5, 1.0, 6.0), (0, 0, 0))  # 6 mm thick, 2:1 pixels
    out = medsr.upscale(_slice(affine), method="bspline")
    assert tuple(out.shape[1:]) == (24, 40, 1)


def test_the_report_of_a_slice_shows_its_plane_only():
    affine = AFFINES["anisotropic"]
    vol = _slice(affine)
    out = medsr.upscale(vol, (2, 2, 1), method="bspline")
    page = Page(build_report(vol, out)[0])
    shown = {i["view"] for i in page.images if "view" in i}
    assert shown == {"axial"}
    assert all(int(i["height"]) > 1 and int(i["width"]) > 1 for i in page.images
               if "view" in i)


# ----------------------------------------------------------------------------- CT padding
def _padded_ct(shape=(32, 32, 6), pad=-3024.0):
    """A CT phantom whose corners, outside a circle, hold the scanner's padding value."""
    ct = phantom(shape) * 1.2 - 1024.0
    x, y = np.meshgrid(*(np.arange(n) - n / 2 + 0.5 for n in shape[:2]), indexing="ij")
    outside = (x ** 2 + y ** 2) > (0.45 * shape[0]) ** 2
    ct[outside] = pad
    return ct.astype(np.float32), outside


def test_padding_is_found_on_ct_only_and_restored_voxel_by_voxel():
    ct, outside = _padded_ct()
    ct[14:18, 14:18, 2:4] = -2500.0  # a dark metal streak inside the body: not padding
    frames = ct[None]
    assert padding_mask(frames, "MR") is None
    assert padding_mask(frames + 3000.0, "CT") is None  # nothing below air: no padding
    mask = padding_mask(frames, "CT")
    assert np.array_equal(mask[0], np.broadcast_to(outside[..., None], ct.shape))
    ct[14:18, 14:18, 2:4] = 0.0
    filled = fill_padding(frames, mask)
    assert np.all(filled[mask] == AIR_HU) and np.array_equal(filled[~mask], frames[~mask])
    assert np.all(frames[mask] == -3024.0)  # the input itself is left alone
    out = np.full((1, 64, 32, 18), 7.0, np.float32)  # ×2, ×1, ×3
    sd = np.ones_like(out)
    assert restore_padding(out, frames, mask, sd, chunk=4)
    up = np.repeat(np.repeat(mask[0], 2, axis=0), 3, axis=2)
    assert np.all(out[0][up] == -3024.0) and np.all(out[0][~up] == 7.0)
    assert np.all(sd[0][up] == 0.0) and np.all(sd[0][~up] == 1.0)
    assert not restore_padding(np.zeros((1, 63, 32, 18), np.float32), frames, mask)


@pytest.mark.parametrize("method, scale", [("default", (1, 1, 3)), ("default", (2, 2, 1)),
                                           ("bspline", (2, 2, 1))])
def test_learned_outputs_keep_the_padding_of_the_input(method, scale, tmp_path):
    ct, outside = _padded_ct()
    affine = make_affine(np.eye(3), (0.8, 0.8, 4.0 if scale[2] > 1 else 0.8), (0, 0, 0))
    vol = MetaTensor(torch.from_numpy(ct)[None], affine=torch.as_tensor(affine))
    result = medsr.upscale(vol, scale, method=method, modality="CT", device="cpu")
    out = result[0].numpy()
    up = outside
    for axis in (0, 1):
        up = np.repeat(up, scale[axis], axis=axis)
    corners = np.broadcast_to(up[..., None], out.shape)
    if method == "bspline":  # plain interpolation: untouched, it rings across the circle
        assert not np.all(out[corners] == -3024.0)
        return
    assert np.all(out[corners] == -3024.0)  # exactly the input's padding, as many voxels
    inside = out[~corners]
    assert inside.min() > -1300.0  # the circle's edge read as air: no cliff, no ringing
    padded = result.meta["medsr_padding"]
    assert padded["voxels"] == int(outside.sum()) * ct.shape[2]
    assert padded["range_hu"] == [-3024.0, -3024.0]
    if scale == (1, 1, 3):  # a DICOM output marks the padding as the scanner did
        import pydicom

        files = medsr.save_volume(result, tmp_path / "dicom", fmt="dicom", dtype="int16")
        first = pydicom.dcmread(sorted(files.iterdir())[0])
        assert first.PixelPaddingValue == -3024 and first.PixelRepresentation == 1
    facts = Page(build_report(vol, result)[0]).facts  # what happened, on the page
    assert "at -3024 HU: read as air" in facts["padding"]["text"]
    assert re.search(r"B-spline [\d.]+ dB on \d+ in-plane slices? of the scan: (kept|not better)",
                     facts["selfcheck"]["text"])
