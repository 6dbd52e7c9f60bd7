"""Learned SR on every grid: in-plane, several axes at once, exact target spacings."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import medsr
from medsr.checkpoint import save_model
from medsr.consistency import SliceProfile, degrade_axes, degrade_matrix
from medsr.geometry import spacing, target_grid
from medsr.methods import split_factors
from medsr.nets import LRRefiner
from medsr.training.config import load_config
from medsr.training.data import PairSampler, Volume
from medsr.transforms import RandInPlaned, partial_fourier
from medsr.transforms.degrade import kspace_truncate
from medsr.transforms.intensity import default_normalization
from tests.conftest import AFFINES, make_affine, phantom


def _inplane_model(folder, profile="kspace", modality="MR"):
    """An untrained in-plane network saved as a model folder (what `medsr train` writes)."""
    torch.manual_seed(0)
    net = LRRefiner(spatial_dims=2, scale=(2, 2), factors=(2, 4), features=8, num_blocks=1,
                    lr_axes=2)
    card = {"network": {"name": "lrrefiner", **net.config}, "scale": [2, 2],
            "spatial_dims": 2, "input": "lr", "factors": [2, 4], "lr_axes": 2,
            "modality": modality, "normalization": default_normalization(modality),
            "degradation": {"axes": 2, "profiles": [profile]}}
    save_model(net, folder, card)
    return folder


def _volume(shape, affine, seed=0):
    return MetaTensor(torch.from_numpy(phantom(shape, seed))[None], affine=torch.as_tensor(affine))


def _band_limited(x: np.ndarray, f: int) -> np.ndarray:
    """Independent construction of MRI's low-resolution samples along the last axis: the
    Fourier series of the central 1/f of k-space, summed explicitly at the LR centres."""
    n = x.shape[-1]
    m = n // f
    kappa = np.arange(-(n // 2), n - n // 2)
    keep = kappa[2 * f * np.abs(kappa) <= n]
    spectrum = np.array([np.sum(x * np.exp(-2j * np.pi * k * np.arange(n) / n), axis=-1)
                         for k in keep])  # (bins, ...)
    centres = np.arange(m) * f + (f - 1) / 2
    basis = np.exp(2j * np.pi * np.outer(centres, keep) / n) / n  # (m, bins)
    return np.moveaxis(np.real(np.tensordot(basis, spectrum, axes=(1, 0))), 0, -1)


@pytest.mark.parametrize("n,f", [(24, 2), (30, 3), (32, 4), (27, 3)])
def test_kspace_operator_equals_the_explicit_fourier_series(n, f):
    x = np.random.default_rng(n).normal(size=(5, n))
    truth = _band_limited(x, f)
    d = degrade_matrix(n // f, f, SliceProfile("sinc"))
    assert np.allclose(x @ d.T, truth, atol=1e-9)
    via_transform = kspace_truncate(torch.from_numpy(x)[None], 1, f)[0].numpy()
    assert np.allclose(via_transform, truth, atol=1e-9)
    assert np.allclose(d.sum(axis=1), 1.0)  # a constant keeps its value


def test_box_operator_on_two_axes_is_the_block_mean():
    x = np.random.default_rng(1).normal(size=(12, 9, 4)).astype(np.float32)
    ops = [(0, 3, SliceProfile("box", 1.0)), (1, 3, SliceProfile("box", 1.0))]
    block = x.reshape(4, 3, 3, 3, 4).mean(axis=(1, 3))
    assert np.allclose(degrade_axes(x, ops), block, atol=1e-6)


@pytest.mark.parametrize("profile", ["kspace", "box"])
def test_inplane_training_pairs_degrade_both_axes(profile):
    cfg = load_config("configs/default_mr_inplane.yaml",
                      {"degradation.profiles": [profile], "degradation.noise": [0.0, 0.0],
                       "patch.min_foreground": 0.0, "patch.batch_size": 3})
    data = torch.from_numpy(phantom((40, 40, 40)) / 1200.0)
    sampler = PairSampler([Volume("p", data, (0, 1, 2))], cfg)
    for f in (2, 3, 4):
        lr, hr = sampler.batch(0, factor=f)
        assert lr.shape[-2:] == (hr.shape[-2] // f, hr.shape[-1] // f)
        assert hr.shape[-1] % f == 0 and hr.shape[-2] % f == 0
        if profile == "box":  # LR voxel (i, j) is the mean of its f×f HR block
            b, _, h, w = hr.shape
            block = hr.reshape(b, 1, h // f, f, w // f, f).mean(dim=(3, 5))
            assert torch.allclose(lr, block, atol=1e-5)


def test_split_factors_finds_the_plane_and_the_thick_axis():
    aff = make_affine(np.eye(3), (2.0, 2.0, 4.0), (0, 0, 0))
    assert split_factors(aff, (2, 2, 1)) == ((0, 1), None, None)
    assert split_factors(aff, (2, 2, 4)) == ((0, 1), 2, None)
    assert split_factors(aff, (1, 1, 3)) == (None, 2, None)
    assert split_factors(make_affine(np.eye(3), (3.0, 3.0, 3.0), (0, 0, 0)), (2, 2, 2)) == \
        ((0, 1), 2, None)
    assert split_factors(aff, (2, 3, 1))[2] is not None  # unequal in-plane factors


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_inplane_model_keeps_geometry_consistency_and_writes_uncertainty(name, tmp_path):
    model = _inplane_model(tmp_path / "m")
    affine = AFFINES[name]
    vol = _volume((16, 14, 5), affine)
    # noise_sd=0: exact consistency (else the phantom's own noise is measured and kept)
    out, sd = medsr.upscale(vol, (2, 2, 1), model=model, uncertainty=True, device="cpu",
                            noise_sd=0)
    shape, expected, _ = target_grid((16, 14, 5), affine, scale=(2, 2, 1))
    assert tuple(out.shape[1:]) == shape == tuple(sd.shape[1:])
    assert np.allclose(out.affine.numpy(), expected, atol=1e-9)
    assert np.allclose(sd.affine.numpy(), expected, atol=1e-9)
    assert out.meta["medsr_consistency_psnr"] > 100  # re-degraded (k-space) = input
    ops = [(0, 2, SliceProfile("sinc")), (1, 2, SliceProfile("sinc"))]
    assert np.allclose(degrade_axes(out[0].numpy(), ops), vol[0].numpy(), atol=0.05)
    assert [o["profile"] for o in out.meta["medsr_operators"]] == ["sinc", "sinc"]
    assert float(sd.min()) >= 0 and float(sd.max()) > 0
    path = tmp_path / "sd.nii.gz"
    medsr.save_volume(sd, path)
    back = nib.load(path)
    assert np.allclose(back.affine, expected, atol=1e-4)
    assert np.allclose(back.get_fdata(), sd[0].numpy(), atol=1e-3)


def test_every_axis_at_once_chains_the_inplane_and_through_plane_models():
    affine = make_affine(np.eye(3), (3.0, 3.0, 3.0), (1.0, 2.0, 3.0))
    vol = _volume((16, 16, 6), affine, seed=2)
    out = medsr.upscale(vol, (2, 2, 2), modality="MR", method="default", device="cpu",
                        noise_sd=0)
    assert out.meta["medsr_method"] == "default in-plane + default"
    assert tuple(out.shape[1:]) == (32, 32, 12)
    assert np.allclose(spacing(out.affine.numpy()), (1.5, 1.5, 1.5))
    assert [(o["axis"], o["profile"]) for o in out.meta["medsr_operators"]] == \
        [(0, "sinc"), (1, "sinc"), (2, "box")]
    assert out.meta["medsr_consistency_psnr"] > 100


@pytest.mark.parametrize("target", [(0.9, 1.1, 1.0), (1.0, 1.0, 1.0)])
def test_exact_spacing_with_a_learned_method(target, tmp_path):
    affine = AFFINES["oblique"]  # 0.8 × 0.8 × 4 mm
    vol = _volume((20, 18, 6), affine, seed=3)
    out = medsr.upscale(vol, spacing=target, method="default", modality="MR", device="cpu")
    assert out.meta["medsr_method"] == "default"  # 4 mm -> ×4 (ceil), then resampled
    shape, expected, _ = target_grid((20, 18, 6), affine, target_spacing=target)
    assert tuple(out.shape[1:]) == shape
    assert np.allclose(out.affine.numpy(), expected, atol=1e-9)
    assert np.allclose(spacing(out.affine.numpy()), target)


def test_isotropic_target_and_its_errors():
    affine = make_affine(np.eye(3), (0.5, 0.5, 3.0), (0, 0, 0))
    vol = _volume((20, 20, 6), affine, seed=5)
    out = medsr.upscale(vol, isotropic=1.0, modality="MR", device="cpu")
    assert np.allclose(spacing(out.affine.numpy()), 1.0)
    with pytest.raises(medsr.MedsrError, match="--spacing or --isotropic"):
        medsr.upscale(vol, spacing=(1, 1, 1), isotropic=1.0)


def test_default_method_serves_inplane_requests_with_the_shipped_model():
    for modality in ("MR", "CT"):
        affine = make_affine(np.eye(3), (1.0, 1.0, 5.0), (0, 0, 0))
        data = phantom((24, 20, 4)) - (1000.0 if modality == "CT" else 0.0)
        vol = MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(affine))
        for f in (2, 3):
            out = medsr.upscale(vol, (f, f, 1), modality=modality, method="default",
                                device="cpu", noise_sd=0)
            assert out.meta["medsr_method"] == "default in-plane"
            assert tuple(out.shape[1:]) == (24 * f, 20 * f, 4)
            expected = "sinc" if modality == "MR" else "box"
            assert out.meta["medsr_operators"][0]["profile"] == expected
            assert math.isinf(out.meta["medsr_consistency_psnr"]) or \
                out.meta["medsr_consistency_psnr"] > 100


def test_self_supervised_needs_a_thick_axis():
    affine = make_affine(np.eye(3), (1.0, 1.0, 1.0), (0, 0, 0))
    vol = _volume((16, 16, 8), affine)
    with pytest.raises(medsr.MedsrError, match="thick axis"):
        medsr.upscale(vol, (2, 2, 1), method="self-supervised", modality="MR")


@pytest.mark.parametrize("n,fraction", [(16, 0.75), (15, 0.6), (20, 1.0)])
def test_partial_fourier_zero_fills_the_unmeasured_frequencies(n, fraction):
    x = np.random.default_rng(n).random((1, n, 5))
    kappa = np.fft.fftfreq(n) * n  # signed frequency of each FFT bin
    measured = round(fraction * n)
    keep = kappa >= (n + 1) // 2 - measured
    assert keep.sum() == measured
    expected = np.abs(np.fft.ifft(np.fft.fft(x, axis=1) * keep[None, :, None], axis=1))
    got = partial_fourier(torch.from_numpy(x), 0, fraction).numpy()
    assert np.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("profile", ["kspace", "box"])
def test_rand_inplane_transform_degrades_both_axes_with_the_lr_affine(profile):
    affine = AFFINES["oblique"]
    x = np.random.default_rng(3).random((12, 18, 4))
    image = MetaTensor(torch.from_numpy(x)[None], affine=torch.as_tensor(affine))
    t = RandInPlaned("image", factor=3, profile=profile).set_random_state(1)
    d = t({"image": image})
    lr = d["lr"][0].numpy()
    if profile == "box":
        expected = x.reshape(4, 3, 6, 3, 4).mean(axis=(1, 3))
    else:
        expected = np.moveaxis(_band_limited(np.moveaxis(x, 1, -1), 3), -1, 1)
        expected = np.moveaxis(_band_limited(np.moveaxis(expected, 0, -1), 3), -1, 0)
    assert np.allclose(lr, expected, atol=1e-9)
    lr_affine = affine.copy()
    for a in (0, 1):
        lr_affine[:3, 3] += affine[:3, a] * 1.0  # (f - 1) / 2 HR voxels
        lr_affine[:3, a] *= 3
    assert np.allclose(d["lr"].affine.numpy(), lr_affine)
    assert d["degradation"]["factor"] == 3 and d["degradation"]["profile"] == profile
