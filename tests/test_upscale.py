"""medsr.upscale: physical positions keep their meaning; the interpolation is the textbook one."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import AFFINES, phantom
from monai.transforms import Compose, ScaleIntensity
from scipy import ndimage

import medsr
from medsr.errors import MedsrError
from medsr.io import SourceInfo, make_volume
from medsr.io.itk import image_from_array
from medsr.transforms import Upscale, Upscaled


def volume(array, affine, dtype="float32"):
    return make_volume(array, affine, SourceInfo("nifti", "", dtype))


def world(affine, shape):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("method", ["linear", "bspline"])
def test_a_linear_field_keeps_its_value_at_every_physical_point(affine, method):
    """A field linear in world coordinates is reproduced on the output grid (away from edges)."""
    coeffs = np.array([0.7, -1.3, 2.1])
    shape = (20, 12, 20)
    field = (world(affine, shape) @ coeffs).astype(np.float32)
    factors = (2, 1, 3)
    out = medsr.upscale(volume(field, affine), factors, method=method)
    out_affine = out.affine.numpy()
    expected = world(out_affine, out.shape[1:]) @ coeffs
    # B-spline's mirror boundary bends a ramp near the ends; the bend decays as 0.27^voxels
    inner = tuple(slice(6 * f, -6 * f) if f > 1 else slice(None) for f in factors)
    np.testing.assert_allclose(out[0].numpy()[inner], expected[inner], atol=0.02)


def test_bspline_equals_scipy_cubic_spline_zoom():
    """Independent reference: scipy's prefiltered cubic B-spline on the voxel-subdivision grid."""
    data = phantom((16, 14, 6))
    out = medsr.upscale(volume(data, AFFINES["anisotropic"]), (2, 1, 4), method="bspline")
    ref = ndimage.zoom(data, (2, 1, 4), order=3, mode="mirror", grid_mode=True)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-2)


def test_linear_equals_torch_trilinear():
    data = phantom((16, 14, 6))
    out = medsr.upscale(volume(data, AFFINES["flipped"]), (3, 1, 5), method="linear")
    ref = torch.nn.functional.interpolate(torch.from_numpy(data)[None, None],
                                          scale_factor=(3, 1, 5), mode="trilinear",
                                          align_corners=False)[0, 0]
    np.testing.assert_allclose(out[0].numpy(), ref.numpy(), atol=1e-3)


def slab_average(thin: np.ndarray, thin_affine: np.ndarray, f: int):
    """Thick slices, each the mean of f thin ones; the thick voxel centre is the slab centre."""
    n = thin.shape[2] // f
    thick = thin[:, :, : n * f].reshape(*thin.shape[:2], n, f).mean(-1)
    t = np.eye(4)
    t[2, 2] = f
    t[2, 3] = (f - 1) / 2
    return thick, thin_affine @ t


def psnr(x, y, data_range):
    return 10 * np.log10(data_range**2 / np.mean((x - y) ** 2))


@pytest.mark.parametrize("f", [3, 5])
def test_thick_slices_upscale_onto_the_thin_truth_grid_like_simpleitk(f):
    """Slab-averaged thick slices upscaled ×f land on the thin grid; PSNR equals SimpleITK's."""
    thin_affine = AFFINES["oblique_flipped"].copy()
    thin_affine[:3, 2] *= 1.0 / np.linalg.norm(thin_affine[:3, 2])  # 1 mm thin slices
    thin = phantom((32, 28, 30), seed=3)
    thick, thick_affine = slab_average(thin, thin_affine, f)
    out = medsr.upscale(volume(thick, thick_affine), (1, 1, f), method="bspline")
    np.testing.assert_allclose(out.affine.numpy(), thin_affine, atol=1e-9)  # overlays the truth
    assert tuple(out.shape[1:]) == thin.shape
    ref_img = sitk.Resample(image_from_array(thick, thick_affine),
                            image_from_array(thin, thin_affine), sitk.Transform(),
                            sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
    ref = sitk.GetArrayFromImage(ref_img).transpose(2, 1, 0)
    rng = float(thin.max() - thin.min())
    ours, theirs = psnr(out[0].numpy(), thin, rng), psnr(ref, thin, rng)
    assert abs(ours - theirs) < 0.01, (ours, theirs)


def test_integer_factors_keep_source_info_and_refuse_nan():
    data = phantom((8, 8, 4))
    src = SourceInfo("nifti", "/tmp/x.nii.gz", "int16", modality="CT")
    out = medsr.upscale(make_volume(data, AFFINES["oblique"], src), (1, 1, 2))
    assert out.meta["medsr_source"].dtype == "int16"
    np.testing.assert_allclose(out.meta["original_affine"].numpy(), AFFINES["oblique"])
    data[1, 2, 3] = np.nan
    with pytest.raises(MedsrError, match="1 NaN/Inf"):
        medsr.upscale(volume(data, AFFINES["oblique"]), (1, 1, 2))


def test_transforms_compose_in_monai_pipelines():
    data = phantom((8, 8, 4))
    pipeline = Compose([Upscale(scale=(1, 1, 3)), ScaleIntensity()])
    out = pipeline(volume(data, AFFINES["anisotropic"]))
    assert tuple(out.shape) == (1, 8, 8, 12)
    assert float(out.max()) == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(out.affine.numpy()[:3, 2]), 5.0 / 3)
    keyed = Upscaled(keys="image", scale=(2, 2, 1))({"image": volume(data, AFFINES["flipped"])})
    assert tuple(keyed["image"].shape) == (1, 16, 16, 4)


def test_upsample_axis_treats_a_stack_of_patches_independently():
    """Training interpolates a batch of 2D patches as one array: no patch may leak into another."""
    from medsr.resample import upsample_axis

    stack = np.stack([phantom((12, 9, 1), seed=s)[..., 0] * (s + 1) for s in range(5)])
    out = upsample_axis(stack, 2, 3)
    for i, patch in enumerate(stack):
        ref = ndimage.zoom(patch, (1, 3), order=3, mode="mirror", grid_mode=True)
        np.testing.assert_allclose(out[i], ref, atol=2e-2)


def test_models_pair_the_upscaled_axis_with_fine_axes_only():
    from medsr.inference import companion_axes

    assert companion_axes((0.6, 0.6, 5.0), 2) == [0, 1]  # through-plane: both planes
    assert companion_axes((0.6, 0.6, 5.0), 0) == [1]  # in-plane axis of a thick scan
    assert companion_axes((1.0, 1.2, 1.1), 1) == [0, 2]
