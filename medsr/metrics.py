"""Image-quality metrics for super-resolved volumes: PSNR, SSIM per slice, MAE, a body mask.

Pure functions on NumPy arrays ``(X, Y, Z)`` (a torch tensor is converted). Intensities are
compared after clipping to a *data range* ``[lo, hi]`` whose width ``R = hi - lo`` is the
peak of PSNR and the dynamic range of SSIM (:func:`data_range` picks it per modality).

Definitions:

- ``PSNR = 10·log10(R² / MSE)`` in dB (``inf`` when ``MSE == 0``); per slice over the whole
  2D slice, for the volume over every voxel (or the voxels of a mask).
- ``SSIM`` of a 2D slice is the mean of the local SSIM map of Wang et al. (2004), computed by
  MONAI's :func:`monai.metrics.compute_ssim_and_cs` (the function behind
  ``monai.metrics.SSIMMetric`` and ``monai.losses.SSIMLoss``, so the training losses and the
  evaluation share one definition, and scikit-image stays a test-only dependency): Gaussian
  window 11×11, sigma 1.5, normalised; ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1·R)²``,
  ``C2 = (K2·R)²``; population (biased) local variances; the map is averaged over the
  *valid* region only (no padding, 5 pixels dropped at each border). This equals
  ``skimage.metrics.structural_similarity(pred, gt, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R)``; medsr divides both images by ``R`` before the
  float32 convolutions (SSIM is invariant to a common scaling), which keeps the agreement with
  scikit-image's float64 result within ~1e-6. Slices need at least 11×11 pixels.
- ``MAE`` is the mean absolute difference (HU for CT) over a mask.
"""

from __future__ import annotations

import logging

import numpy as np

from medsr.errors import MedsrError

logger = logging.getLogger(__name__)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: CT data range in HU: air to the top of the 12-bit range.
CT_RANGE = (-1024.0, 3071.0)
#: MR data range: 0 to this percentile of the ground truth.
MR_PERCENTILE = 99.5
#: CT body mask threshold in HU (between air/lung and soft tissue).
CT_BODY_HU = -500.0


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def data_range(gt, modality: str | None) -> tuple[float, float, str]:
    """Clipping range ``(lo, hi)`` for a modality and how it was chosen.

    CT: the fixed HU range ``[-1024, 3071]``. MR: ``[0, 99.5th percentile of gt]``.
    Unknown modality: ``[min(gt), max(gt)]``.
    """
    gt = _numpy(gt)
    if modality == "CT":
        return CT_RANGE[0], CT_RANGE[1], "CT: fixed HU range"
    if modality == "MR":
        hi = float(np.percentile(gt, MR_PERCENTILE))
        if hi <= 0:
            hi = float(gt.max())
        return 0.0, hi, f"MR: 0 to the {MR_PERCENTILE:g}th percentile of GT"
    return float(gt.min()), float(gt.max()), "unknown modality: GT min to max"


def slices(array, axis: int) -> np.ndarray:
    """View of a 3D array as a stack of 2D slices ``(n, H, W)`` along ``axis``."""
    array = _numpy(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    return np.moveaxis(array, axis, 0)


def psnr(pred, gt, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, ``10·log10(R²/MSE)``; ``inf`` for identical inputs.

    Args:
        pred, gt: arrays of the same shape (already clipped to the data range).
        data_range: ``R``, the width of the data range.
        mask: optional boolean array; only its voxels count.
    """
    diff = _numpy(pred).astype(np.float64) - _numpy(gt).astype(np.float64)
    if mask is not None:
        diff = diff[_numpy(mask).astype(bool)]
    mse = float(np.mean(diff * diff)) if diff.size else float("nan")
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(float(data_range) ** 2 / mse))


def psnr_per_slice(pred, gt, axis: int, data_range: float) -> np.ndarray:
    """PSNR of every 2D slice along ``axis`` (``inf`` where a slice matches exactly)."""
    p, g = slices(pred, axis).astype(np.float64), slices(gt, axis).astype(np.float64)
    mse = np.mean((p - g) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / mse)


def ssim_per_slice(pred, gt, axis: int, data_range: float, batch: int = 32) -> np.ndarray:
    """Mean SSIM of every 2D slice along ``axis`` (MONAI, constants in the module docstring).

    Raises:
        MedsrError: when a slice is smaller than the 11×11 window.
    """
    import torch
    from monai.metrics import compute_ssim_and_cs

    p, g = slices(pred, axis), slices(gt, axis)
    if p.shape != g.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {g.shape}")
    if min(p.shape[1:]) < SSIM_WINDOW:
        raise MedsrError(f"slices along axis {axis} are {p.shape[1]}×{p.shape[2]} pixels; "
                         f"SSIM needs at least {SSIM_WINDOW}×{SSIM_WINDOW} (choose another "
                         "--axis)")
    scale = 1.0 / float(data_range)
    out = []

    def chunk(a: np.ndarray, start: int) -> torch.Tensor:
        part = a[start:start + batch].astype(np.float64) * scale
        return torch.from_numpy(part.astype(np.float32))[:, None]

    for start in range(0, p.shape[0], batch):
        ssim_map, _ = compute_ssim_and_cs(
            chunk(p, start), chunk(g, start), spatial_dims=2, kernel_size=[SSIM_WINDOW] * 2,
            kernel_sigma=[SSIM_SIGMA] * 2, data_range=1.0, k1=SSIM_K1, k2=SSIM_K2)
        out.append(ssim_map.double().mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def ssim(pred, gt, data_range: float) -> float:
    """Mean SSIM of one 2D image pair (see the module docstring)."""
    p, g = _numpy(pred), _numpy(gt)
    if p.ndim != 2:
        raise ValueError(f"expected 2D images, got shape {p.shape}")
    return float(ssim_per_slice(p[None], g[None], 0, data_range)[0])


def mae(pred, gt, mask=None) -> float:
    """Mean absolute error, over ``mask`` when given (``nan`` for an empty mask)."""
    diff = np.abs(_numpy(pred).astype(np.float64) - _numpy(gt).astype(np.float64))
    if mask is not None:
        diff = diff[_numpy(mask).astype(bool)]
    return float(diff.mean()) if diff.size else float("nan")


def otsu_threshold(array, bins: int = 256) -> float:
    """Otsu's threshold of an array's histogram (maximal between-class variance)."""
    values = _numpy(array).astype(np.float64).ravel()
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def body_mask(gt, modality: str | None, fill_axis: int = 2) -> tuple[np.ndarray, str]:
    """Automatic foreground (body) mask of the ground truth, and a description of the rule.

    CT: ``gt > -500 HU``. MR and unknown modality: ``gt >`` Otsu's threshold (256 bins).
    Then the largest 6-connected component is kept and holes are filled slice by slice along
    ``fill_axis`` (lungs, sinuses and ventricles count as inside). An empty foreground gives
    the whole volume.
    """
    import SimpleITK as sitk

    gt = _numpy(gt)
    if modality == "CT":
        threshold, rule = CT_BODY_HU, f"CT > {CT_BODY_HU:g} HU"
    else:
        threshold = otsu_threshold(gt)
        rule = f"{modality or 'unknown modality'}: > Otsu threshold {threshold:.4g}"
    fg = gt > threshold
    if not fg.any():
        logger.warning("body mask is empty (%s); using the whole volume", rule)
        return np.ones(gt.shape, dtype=bool), f"whole volume (no voxel {rule})"
    labels = sitk.RelabelComponent(
        sitk.ConnectedComponent(sitk.GetImageFromArray(fg.astype(np.uint8))),
        sortByObjectSize=True)
    largest = sitk.GetArrayViewFromImage(labels) == 1
    out = np.moveaxis(np.array(largest, dtype=np.uint8), fill_axis, 0)
    for i, plane in enumerate(out):
        filled = sitk.BinaryFillhole(sitk.GetImageFromArray(plane), fullyConnected=False,
                                     foregroundValue=1.0)
        out[i] = sitk.GetArrayViewFromImage(filled)
    mask = np.moveaxis(out, 0, fill_axis).astype(bool)
    return mask, f"{rule}, largest component, holes filled"
