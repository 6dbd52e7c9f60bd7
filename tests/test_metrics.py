"""medsr.metrics against scikit-image and NumPy reference formulas on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phantom
from scipy.ndimage import correlate1d
from skimage.filters import threshold_otsu
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medsr import metrics
from medsr.errors import MedsrError


def skimage_ssim(pred, gt, data_range):
    return structural_similarity(gt, pred, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=data_range)


def formula_ssim(x, y, data_range, k1=0.01, k2=0.03):
    """Wang et al. (2004) written out: 11-tap Gaussian (sigma 1.5), valid region, population
    moments, in float64."""
    d = np.arange(-5, 6, dtype=np.float64)
    w = np.exp(-d**2 / (2 * 1.5**2))
    w /= w.sum()

    def blur(a):
        out = correlate1d(correlate1d(a, w, axis=0, mode="constant"), w, axis=1,
                          mode="constant")
        return out[5:-5, 5:-5]

    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def pairs():
    """(pred, gt, data_range) image pairs of different kinds, already within the range."""
    rng = np.random.default_rng(3)
    vol = phantom((40, 36, 16))
    ct_gt = np.clip(vol[:, :, 8] - 1000.0, -1024, 3071)
    ct_pred = np.clip(ct_gt + rng.normal(0, 40, ct_gt.shape), -1024, 3071)
    uniform = rng.uniform(0, 1, (32, 27))
    blurred = (uniform + np.roll(uniform, 1, 0) + np.roll(uniform, 1, 1)) / 3
    mr_gt = vol[:, 18, :].copy()
    mr_pred = mr_gt * 0.9 + 20.0
    return [(ct_pred, ct_gt, 4095.0), (blurred, uniform, 1.0),
            (mr_pred, mr_gt, float(mr_gt.max() - mr_gt.min())),
            (np.zeros((20, 20)), np.full((20, 20), 5.0), 10.0)]


@pytest.mark.parametrize("case", range(4))
def test_ssim_matches_scikit_image_and_the_formula(case):
    pred, gt, r = pairs()[case]
    ours = metrics.ssim(pred, gt, r)
    assert ours == pytest.approx(skimage_ssim(pred, gt, r), abs=1e-4)
    assert ours == pytest.approx(formula_ssim(pred, gt, r), abs=1e-4)


def test_ssim_is_one_for_identical_images_and_symmetric():
    pred, gt, r = pairs()[0]
    assert metrics.ssim(gt, gt, r) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(pred, gt, r) == pytest.approx(metrics.ssim(gt, pred, r), abs=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_per_slice_metrics_follow_the_axis(axis):
    rng = np.random.default_rng(axis)
    gt = phantom((22, 18, 13))
    pred = gt + rng.normal(0, 25, gt.shape).astype(np.float32)
    r = float(gt.max() - gt.min())
    s_ours = metrics.ssim_per_slice(pred, gt, axis, r, batch=5)  # batches must not matter
    p_ours = metrics.psnr_per_slice(pred, gt, axis, r)
    assert len(s_ours) == len(p_ours) == gt.shape[axis]
    for i in range(gt.shape[axis]):
        p2, g2 = np.take(pred, i, axis), np.take(gt, i, axis)
        assert s_ours[i] == pytest.approx(skimage_ssim(p2, g2, r), abs=1e-4)
        assert p_ours[i] == pytest.approx(peak_signal_noise_ratio(g2, p2, data_range=r),
                                          abs=1e-6)


def test_psnr_volume_and_mask_against_numpy():
    rng = np.random.default_rng(1)
    gt = rng.uniform(-1000, 2000, (10, 11, 12))
    pred = gt + rng.normal(0, 30, gt.shape)
    assert metrics.psnr(pred, gt, 4095) == pytest.approx(
        peak_signal_noise_ratio(gt, pred, data_range=4095), abs=1e-9)
    mask = gt > 0
    mse = np.mean((pred[mask] - gt[mask]) ** 2)
    assert metrics.psnr(pred, gt, 4095, mask) == pytest.approx(10 * np.log10(4095**2 / mse))
    assert metrics.psnr(gt, gt, 4095) == float("inf")
    # known value: a constant error of 1 on a range of 100 is 40 dB
    assert metrics.psnr(np.ones((4, 4, 4)), np.zeros((4, 4, 4)), 100) == pytest.approx(40.0)


def test_mae_with_and_without_mask():
    gt = np.zeros((4, 5, 6))
    pred = np.zeros((4, 5, 6))
    pred[0] = 10.0
    mask = np.zeros(gt.shape, dtype=bool)
    mask[:2] = True
    assert metrics.mae(pred, gt) == pytest.approx(2.5)
    assert metrics.mae(pred, gt, mask) == pytest.approx(5.0)
    assert np.isnan(metrics.mae(pred, gt, np.zeros(gt.shape, bool)))


def test_data_range_per_modality():
    gt = np.linspace(-50, 1000, 1000).reshape(10, 10, 10)
    assert metrics.data_range(gt, "CT")[:2] == (-1024.0, 3071.0)
    lo, hi, _ = metrics.data_range(gt, "MR")
    assert lo == 0 and hi == pytest.approx(np.percentile(gt, 99.5))
    assert metrics.data_range(gt, None)[:2] == (-50.0, 1000.0)


def test_ssim_needs_slices_as_large_as_the_window():
    with pytest.raises(MedsrError, match="at least 11"):
        metrics.ssim_per_slice(np.zeros((20, 20, 8)), np.zeros((20, 20, 8)), 0, 1.0)


def test_otsu_agrees_with_scikit_image():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 3, 4000), rng.normal(60, 8, 2000)])
    width = (values.max() - values.min()) / 256
    assert metrics.otsu_threshold(values) == pytest.approx(threshold_otsu(values, nbins=256),
                                                           abs=width)


def test_ct_body_mask_keeps_the_body_fills_cavities_drops_specks():
    shape = (30, 28, 16)
    body = phantom(shape) > 300  # the outer ellipsoid
    ct = np.where(body, 40.0, -1000.0)
    cavity = np.zeros(shape, bool)
    cavity[12:18, 11:17, 5:11] = True  # an air-filled cavity inside the body (lung, sinus)
    ct[cavity] = -900.0
    ct[0:2, 0:2, 0:2] = 100.0  # a speck outside the body (table, noise)
    mask, rule = metrics.body_mask(ct, "CT")
    assert "-500" in rule
    assert mask[cavity].all() and not mask[0:2, 0:2, 0:2].any()
    assert np.array_equal(mask, body | cavity)


def test_mr_body_mask_uses_otsu_and_an_empty_foreground_gives_everything():
    gt = phantom((30, 28, 16))
    mask, rule = metrics.body_mask(gt, "MR")
    assert "Otsu" in rule
    assert mask.sum() == pytest.approx((gt > 300).sum(), rel=0.1)
    everything, rule = metrics.body_mask(np.full((5, 5, 5), -2000.0), "CT")
    assert everything.all() and "whole volume" in rule
