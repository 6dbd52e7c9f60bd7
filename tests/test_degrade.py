"""Degradation transforms against their definitions on analytic inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import AFFINES, phantom
from monai.data import MetaTensor

from medsr.api import upscale
from medsr.geometry import resampled_affine
from medsr.io import SourceInfo, make_volume
from medsr.transforms.degrade import (
    FWHM_PER_SIGMA,
    add_noise,
    gaussian_psf,
    kspace_truncate,
    profile_kernel,
    simulate_thick_slices,
    slice_profile,
)
from medsr.transforms.random_degrade import (
    RandGaussianPSFd,
    RandKSpaced,
    RandNoised,
    RandSliceProfiled,
)

SHAPES = {2: (2, 23, 17), 3: (2, 13, 11, 14)}


def _ramp(shape, axis: int, a: float = 3.0, b: float = 0.5) -> torch.Tensor:
    """``a + b * i`` along spatial ``axis``, float64, channel-first."""
    i = torch.arange(shape[axis + 1], dtype=torch.float64)
    view = [1] * len(shape)
    view[axis + 1] = -1
    return (a + b * i).reshape(view).expand(shape).clone()


def _sigma_from_log_fit(d: np.ndarray, w: np.ndarray) -> float:
    """Sigma of a sampled Gaussian: least-squares parabola through log(w)."""
    c2 = np.polyfit(d, np.log(w), 2)[0]
    return math.sqrt(-0.5 / c2)


# ---------------------------------------------------------------- slice profile


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("f", [2, 3, 4, 5, 6])
def test_box_of_width_factor_is_slab_mean(ndim, f):
    x = torch.rand(SHAPES[ndim], dtype=torch.float64, generator=torch.Generator().manual_seed(f))
    for axis in range(ndim):
        out = slice_profile(x, axis, f)
        moved = np.moveaxis(x.numpy(), axis + 1, -1)
        m = moved.shape[-1] // f
        want = moved[..., : m * f].reshape(*moved.shape[:-1], m, f).mean(-1)
        np.testing.assert_allclose(out.numpy(), np.moveaxis(want, -1, axis + 1), atol=1e-12)
        assert slice_profile(x, axis - ndim, f).shape == out.shape  # negative axis


@pytest.mark.parametrize(("f", "t", "want"), [
    (4, 3.2, [0.6, 1, 1, 0.6]),          # even factor: half-integer offsets ±0.5, ±1.5
    (3, 2.4, [0.7, 1, 0.7]),
    (5, 6.5, [0.75, 1, 1, 1, 1, 1, 0.75]),
    (2, 2.6, [0.3, 1, 1, 0.3]),
    (1, 0.6, [1]),                       # thinner than a voxel: the voxel itself
])
def test_box_fractional_weights(f, t, want):
    d, w = profile_kernel(f, t, "box")
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(w, want / want.sum(), atol=1e-12)
    np.testing.assert_allclose(d, np.arange(len(w)) - (len(w) - 1) / 2)  # centred
    assert math.isclose(w.sum(), 1.0, abs_tol=1e-12)
    # slice_profile applies exactly this kernel: the response to a delta
    n = 6 * f + 10
    c = 2 * f  # LR slice 2, centred at HR 2f + (f-1)/2
    for off, wk in zip(d, w):
        delta = torch.zeros(1, n, 3, dtype=torch.float64)
        delta[0, int(c + (f - 1) / 2 + off)] = 1.0
        assert math.isclose(float(slice_profile(delta, 0, f, t)[0, 2, 0]), wk, abs_tol=1e-12)


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("ratio", [0.5, 0.8, 1.0, 1.37, 2.2])
def test_constant_stays_constant(profile, ratio):
    x = torch.full((1, 31, 7, 5), 2.5)
    for f in (1, 2, 3, 4, 6):
        out = slice_profile(x, 0, f, ratio * f, profile)
        assert out.shape == (1, 31 // f, 7, 5)
        torch.testing.assert_close(out, torch.full_like(out, 2.5))


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("f", [2, 3, 4, 5, 6])
def test_ramp_lands_on_lr_centres(profile, f):
    """Geometry convention: LR slice k sits at HR index k*f + (f-1)/2."""
    for ratio in (0.7, 1.0, 1.37):
        for ndim, axis in ((2, 1), (3, 2), (3, 0)):
            shape = list(SHAPES[ndim])
            shape[axis + 1] = 12 * f
            x = _ramp(shape, axis)
            out = np.moveaxis(slice_profile(x, axis, f, ratio * f, profile).numpy(), axis + 1, 0)
            d, _ = profile_kernel(f, ratio * f, profile)
            k = np.arange(out.shape[0])
            centre = k * f + (f - 1) / 2
            inner = (centre + d[0] >= 0) & (centre + d[-1] <= shape[axis + 1] - 1)
            assert inner.sum() >= 4
            want = (3.0 + 0.5 * centre)[inner].reshape(-1, *[1] * (out.ndim - 1))
            np.testing.assert_allclose(out[inner], np.broadcast_to(want, out[inner].shape),
                                       atol=1e-10)


@pytest.mark.parametrize("f", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("ratio", [0.8, 1.0, 1.2, 2.0])
def test_gaussian_kernel_fwhm(f, ratio):
    t = ratio * f
    d, w = profile_kernel(f, t, "gaussian")
    assert math.isclose(w.sum(), 1.0, abs_tol=1e-12)
    np.testing.assert_allclose(w, w[::-1], atol=1e-15)           # symmetric about the centre
    assert np.all(np.abs(d) <= 3 * t / FWHM_PER_SIGMA + 1e-9)    # truncated at ±3 sigma
    assert math.isclose(_sigma_from_log_fit(d, w) * FWHM_PER_SIGMA, t, rel_tol=1e-9)
    if t >= 1.6:  # sampled finely enough: the second moment agrees too (±3 sigma loses ~1.4%)
        fwhm2 = math.sqrt(float(np.sum(w * d**2))) * FWHM_PER_SIGMA
        assert fwhm2 == pytest.approx(t, rel=0.03)


def test_slice_profile_rejects_bad_input():
    x = torch.zeros(1, 5, 5)
    for args in ((0, 6), (0, 0), (0, 2.5), (2, 2)):
        with pytest.raises(ValueError):
            slice_profile(x, *args)
    with pytest.raises(ValueError):
        slice_profile(x, 0, 2, profile="triangle")
    with pytest.raises(ValueError):
        slice_profile(x, 0, 2, thickness=0.0)


# ---------------------------------------------------------------- k-space


def _band(n: int, f: int) -> np.ndarray:
    return np.abs(np.fft.fftfreq(n)) <= 1 / (2 * f) + 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("shape", "axes", "factor"), [
    ((1, 24, 20, 9), (0, 1), (3, 2)),
    ((2, 25, 19), (1,), 4),
    ((1, 16, 15, 21), (0, 1, 2), 2),
    ((1, 17, 12), (0, 1), 1),
])
def test_kspace_zero_filled_is_band_limited(dtype, shape, axes, factor):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    out = kspace_truncate(x, axes, factor, downsample=False)
    assert out.shape == x.shape and out.dtype == dtype and not out.is_complex()
    dims = tuple(a + 1 for a in axes)
    fs = [factor] * len(axes) if isinstance(factor, int) else factor
    mask = np.ones(shape, dtype=bool)
    for dim, f in zip(dims, fs):
        view = [1] * len(shape)
        view[dim] = -1
        mask &= _band(shape[dim], f).reshape(view)
    xin = np.fft.fftn(x.double().numpy(), axes=dims)
    xout = np.fft.fftn(out.double().numpy(), axes=dims)
    scale = np.abs(xin).max()
    assert np.abs(xout[~mask]).max(initial=0.0) <= 1e-5 * scale
    np.testing.assert_allclose(xout[mask], xin[mask], rtol=1e-5, atol=1e-5 * scale)
    if fs == [1] * len(fs):
        torch.testing.assert_close(out, x)


def test_kspace_downsample_constant_and_shape():
    for n, f in ((24, 2), (25, 3), (31, 4), (30, 5), (36, 6)):
        x = torch.full((1, n, 10), 7.25, dtype=torch.float64)
        out = kspace_truncate(x, 0, f)
        assert out.shape == (1, n // f, 10)
        torch.testing.assert_close(out, torch.full_like(out, 7.25), rtol=0, atol=1e-12)
    out = kspace_truncate(torch.full((1, 12, 18, 9), -3.0), (0, 1, 2), (2, 3, 4))
    assert out.shape == (1, 6, 6, 2)
    torch.testing.assert_close(out, torch.full_like(out, -3.0))


@pytest.mark.parametrize("f", [2, 3, 4, 5])
def test_kspace_downsample_samples_cosine_at_lr_centres(f):
    m = 12
    n = m * f
    q, theta = 3, 0.4  # q < m/2: inside the band
    i = torch.arange(n, dtype=torch.float64)
    col = torch.cos(2 * math.pi * q * i / n + theta)
    row = torch.cos(2 * math.pi * 2 * i[:n] / n - 1.1)
    x = (col[:, None] * row[None, :])[None]                  # (1, n, n): separable cosines
    out = kspace_truncate(x, (0, 1), f)
    p = torch.arange(m, dtype=torch.float64) * f + (f - 1) / 2
    want = (torch.cos(2 * math.pi * q * p / n + theta)[:, None]
            * torch.cos(2 * math.pi * 2 * p / n - 1.1)[None, :])[None]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(kspace_truncate(x, (0, 1), f, magnitude=True), want.abs(),
                               rtol=0, atol=1e-12)
    # also on the zero-filled grid: the cosine is inside the band, so it is unchanged
    torch.testing.assert_close(kspace_truncate(x, (0, 1), f, downsample=False), x,
                               rtol=0, atol=1e-12)


# ---------------------------------------------------------------- PSF and noise


def test_gaussian_psf_of_delta():
    x = torch.zeros(1, 41, 9, 37, dtype=torch.float64)
    x[0, 20, 4, 18] = 1.0
    fwhm = (2.0, 0.0, 3.5)
    out = gaussian_psf(x, fwhm)
    assert math.isclose(float(out.sum()), 1.0, abs_tol=1e-12)
    for axis, profile in ((0, out[0, :, 4, 18]), (2, out[0, 20, 4, :])):
        sigma = fwhm[axis] / FWHM_PER_SIGMA
        d = np.arange(profile.numel()) - profile.numel() // 2
        want = np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= 3 * sigma)
        # the output along one axis through the centre is the other axis' kernel peak times
        # the analytic sampled Gaussian; the peak cancels in the normalisation
        np.testing.assert_allclose(profile.numpy() / profile.sum().item(), want / want.sum(),
                                   atol=1e-12)
        nz = profile.numpy() > 0
        assert math.isclose(_sigma_from_log_fit(d[nz], profile.numpy()[nz]) * FWHM_PER_SIGMA,
                            fwhm[axis], rel_tol=1e-9)
    assert torch.count_nonzero(out[0, 20, :, 18]) == 1  # no blur on the FWHM-0 axis


def test_gaussian_psf_identity_and_constant():
    x = torch.rand(2, 12, 13, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gaussian_psf(x, 0.0), x)
    c = torch.full((1, 8, 9, 10), 4.0)
    torch.testing.assert_close(gaussian_psf(c, (2.5, 1.0, 3.0)), c)  # replicate boundary


def test_gaussian_noise_std():
    x = torch.full((1, 256, 256), 0.5, dtype=torch.float64)
    out = add_noise(x, 0.1, generator=torch.Generator().manual_seed(1))
    assert float(out.std()) == pytest.approx(0.1, rel=0.02)
    assert float(out.mean()) == pytest.approx(0.5, abs=0.002)
    assert torch.equal(x, torch.full_like(x, 0.5))  # input untouched
    again = add_noise(x, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_rician_noise_mean_on_zero():
    x = torch.zeros(1, 256, 256, dtype=torch.float64)
    out = add_noise(x, 0.2, rician=True, generator=torch.Generator().manual_seed(2))
    assert float(out.min()) >= 0
    assert float(out.mean()) == pytest.approx(0.2 * math.sqrt(math.pi / 2), rel=0.02)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_functions_keep_dtype_and_input(dtype):
    x = torch.rand(1, 12, 10, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    before = x.clone()
    outs = [slice_profile(x, 2, 2, 2.4, "gaussian"), kspace_truncate(x, (0, 1), 2),
            kspace_truncate(x, 1, 3, downsample=False), gaussian_psf(x, (1.5, 0, 2)),
            add_noise(x, 0.1, rician=True)]
    for out in outs:
        assert out.dtype == dtype and torch.isfinite(out).all()
    assert torch.equal(x, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    x = torch.rand(1, 20, 18, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for fn in (lambda v: slice_profile(v, 2, 3, 3.5, "gaussian"),
               lambda v: kspace_truncate(v, (0, 1), 2),
               lambda v: gaussian_psf(v, (2.0, 1.0, 0.0))):
        torch.testing.assert_close(fn(x.cuda()).cpu(), fn(x))


# ---------------------------------------------------------------- geometry and MetaTensors


def _volume(name: str, shape=(12, 10, 18)) -> MetaTensor:
    return make_volume(phantom(shape), AFFINES[name], SourceInfo("array", "", "float32"))


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_simulate_thick_slices_affine_and_round_trip(name):
    vol = _volume(name)
    for axis, f in ((2, 3), (0, 4), (1, 2)):
        lr = simulate_thick_slices(vol, axis, f)
        ratio = [1.0, 1.0, 1.0]
        ratio[axis] = f
        np.testing.assert_allclose(np.asarray(lr.affine), resampled_affine(vol.affine, ratio),
                                   atol=1e-12)
        assert tuple(lr.meta["spatial_shape"]) == tuple(lr.shape[1:])
        np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(vol.meta["affine"]))
        if vol.shape[axis + 1] % f == 0:  # upscaled ×f, the thick volume lands on the thin grid
            scale = [1, 1, 1]
            scale[axis] = f
            np.testing.assert_allclose(np.asarray(upscale(lr, scale).affine),
                                       np.asarray(vol.affine), atol=1e-9)
    with pytest.raises(TypeError):
        simulate_thick_slices(vol.as_tensor(), 2, 3)


def test_kspace_downsample_affine():
    vol = _volume("oblique", (12, 10, 18))
    lr = kspace_truncate(vol, (0, 1), (2, 5))
    assert lr.shape == (1, 6, 2, 18)
    np.testing.assert_allclose(np.asarray(lr.affine), resampled_affine(vol.affine, (2, 5, 1)))
    same = kspace_truncate(vol, (0, 1), 2, downsample=False)
    np.testing.assert_allclose(np.asarray(same.affine), np.asarray(vol.affine))


# ---------------------------------------------------------------- random keyed transforms


def test_rand_slice_profile_seeded_and_recorded():
    vol = _volume("oblique_flipped", (12, 14, 36))
    t = RandSliceProfiled("image", axis=(0, -1), factor=(2, 6), thickness=(0.8, 1.2),
                          profile=("box", "gaussian"))
    drawn = set()
    for seed in range(25):
        a = t.set_random_state(seed)({"image": vol})
        b = t.set_random_state(seed)({"image": vol})
        assert torch.equal(a["lr"], b["lr"]) and a["degradation"] == b["degradation"]
        rec = a["degradation"]
        assert set(rec) == {"axis", "factor", "thickness", "profile"}
        f, axis = rec["factor"], rec["axis"]
        assert 2 <= f <= 6 and axis in (0, 2) and rec["profile"] in ("box", "gaussian")
        assert 0.8 * f <= rec["thickness"] <= 1.2 * f
        torch.testing.assert_close(a["lr"], slice_profile(vol, axis, f, rec["thickness"],
                                                          rec["profile"]))
        ratio = [1.0, 1.0, 1.0]
        ratio[axis] = f
        np.testing.assert_allclose(np.asarray(a["lr"].affine),
                                   resampled_affine(vol.affine, ratio), atol=1e-12)
        assert a["image"] is vol
        drawn.add((f, axis, rec["profile"]))
    assert len({d[0] for d in drawn}) == 5 and len({d[1] for d in drawn}) == 2
    assert len({d[2] for d in drawn}) == 2


def test_rand_slice_profile_fixed_draw_on_plain_tensor():
    x = torch.rand(1, 10, 12, generator=torch.Generator().manual_seed(0))
    out = RandSliceProfiled("hr", lr_key="low", axis=1, factor=3, thickness=1.0)({"hr": x})
    assert out["degradation"] == {"axis": 1, "factor": 3, "thickness": 3.0, "profile": "box"}
    torch.testing.assert_close(out["low"], x.reshape(1, 10, 4, 3).mean(-1))


@pytest.mark.parametrize("make", [
    lambda: RandKSpaced("image", axes=(0, 1), factor=(2, 4)),
    lambda: RandKSpaced("image", axes=1, factor=(2, 3), downsample=True, magnitude=True),
    lambda: RandGaussianPSFd("image", fwhm=(0.5, 2.5), axes=(0, 1)),
    lambda: RandNoised("image", sigma=(0.01, 0.1), rician=True),
])
def test_rand_degradations_seeded(make):
    x = torch.rand(1, 16, 18, 12, generator=torch.Generator().manual_seed(0))
    t = make()
    a = t.set_random_state(7)({"image": x})["image"]
    b = t.set_random_state(7)({"image": x})["image"]
    assert torch.equal(a, b)
    outs = [t.set_random_state(s)({"image": x})["image"] for s in range(8)]
    assert any(o.shape != a.shape or not torch.equal(o, a) for o in outs)
    assert torch.equal(x, torch.rand(1, 16, 18, 12, generator=torch.Generator().manual_seed(0)))
    skip = make()
    skip.prob = 0.0
    assert skip.set_random_state(0)({"image": x})["image"] is x


def test_rand_pipeline_order():
    from monai.transforms import Compose

    vol = _volume("anisotropic", (16, 16, 24))
    pipe = Compose([RandGaussianPSFd("image", fwhm=(0.5, 1.5)),
                    RandSliceProfiled("image", axis=2, factor=(2, 4)),
                    RandNoised("lr", sigma=(1.0, 5.0))])
    a = pipe.set_random_state(3)({"image": vol})
    b = pipe.set_random_state(3)({"image": vol})
    assert torch.equal(a["lr"], b["lr"])
    f = a["degradation"]["factor"]
    assert a["lr"].shape == (1, 16, 16, 24 // f)
    np.testing.assert_allclose(np.asarray(a["lr"].affine),
                               resampled_affine(vol.affine, (1, 1, f)), atol=1e-12)
