"""PNG figures of a benchmark: per-slice metric curves and an image / error-map grid.

Figures are drawn with matplotlib's object API on an Agg canvas (``matplotlib.figure.Figure``
and ``savefig``), so no global backend is switched and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_curves(results: Mapping, path: str | Path, title: str = "",
                factor: int | None = None) -> Path:
    """PSNR and SSIM per slice, one line per method (``results``: name -> EvaluationResult).

    With ``factor``, thin grey lines mark the boundaries of the thick (LR) slices (when there
    are at most 40 of them). The legend gives each method's mean over the slices.
    """
    fig = _figure(9, 5.5)
    ax_psnr, ax_ssim = fig.subplots(2, 1, sharex=True)
    n = max((res.n_slices for res in results.values()), default=0)
    marker = "." if n <= 80 else None
    axis = next(iter(results.values())).axis if results else None
    for name, res in results.items():
        psnr = np.asarray(res.slice_psnr, dtype=np.float64)
        psnr[~np.isfinite(psnr)] = np.nan
        ax_psnr.plot(psnr, marker=marker, lw=1, label=f"{name} ({res.psnr_slice_mean:.2f} dB)")
        ax_ssim.plot(res.slice_ssim, marker=marker, lw=1, label=f"{name} ({res.ssim:.4f})")
    if factor and factor > 1 and 0 < n <= 40 * factor:
        for ax in (ax_psnr, ax_ssim):
            for b in np.arange(factor, n, factor) - 0.5:
                ax.axvline(b, color="0.85", lw=0.6, zorder=0)
    ax_psnr.set_ylabel("PSNR (dB)")
    ax_ssim.set_ylabel("SSIM")
    ax_ssim.set_xlabel(f"slice index along axis {axis}" if n else "slice")
    for ax in (ax_psnr, ax_ssim):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def display_plane(shape: Sequence[int], spacing: Sequence[float], axis: int
                  ) -> tuple[int, int]:
    """``(fixed_axis, index)`` of a plane that contains ``axis``: the other axis with the largest
    spacing is held at its middle, so the plane shows the degraded axis at its finest."""
    others = [a for a in range(3) if a != axis]
    fixed = max(others, key=lambda a: (spacing[a], a))
    return fixed, shape[fixed] // 2


def _plane(array: np.ndarray, fixed: int, index: int) -> np.ndarray:
    return np.take(array, index, axis=fixed).T  # rows: the later axis, columns: the earlier


def plot_slices(truth: np.ndarray, low: np.ndarray, preds: Mapping[str, np.ndarray],
                spacing: Sequence[float], axis: int, data_range: tuple[float, float],
                path: str | Path, title: str = "") -> Path:
    """Grid: truth and the LR copy on top, then each method beside its error (method − truth).

    Args:
        truth: HR ``(X, Y, Z)``; ``low``: the LR copy repeated onto the HR grid (nearest).
        preds: method name -> upscaled ``(X, Y, Z)`` on the HR grid.
        spacing: HR voxel size per axis (mm), for the pixel aspect.
        axis: the degraded axis; the plane shown contains it.
        data_range: grey-level window ``(lo, hi)``.
    """
    fixed, index = display_plane(truth.shape, spacing, axis)
    rows_axis, cols_axis = [a for a in range(3) if a != fixed][::-1]
    aspect = spacing[rows_axis] / spacing[cols_axis]
    errors = {k: v - truth for k, v in preds.items()}
    limit = max((float(np.percentile(np.abs(_plane(e, fixed, index)), 99.5))
                 for e in errors.values()), default=1.0) or 1.0
    lo, hi = data_range
    plane_shape = _plane(truth, fixed, index).shape
    panel_height = float(np.clip(3.5 * plane_shape[0] * spacing[rows_axis]
                                 / (plane_shape[1] * spacing[cols_axis]), 1.5, 6.0))
    fig = _figure(8.5, (panel_height + 0.8) * (1 + len(preds)) + 0.4)
    axes = np.atleast_2d(fig.subplots(1 + len(preds), 2))
    grey = {"cmap": "gray", "vmin": lo, "vmax": hi, "origin": "lower", "aspect": aspect,
            "interpolation": "nearest"}
    axes[0, 0].imshow(_plane(truth, fixed, index), **grey)
    axes[0, 0].set_title("truth (HR)")
    axes[0, 1].imshow(_plane(low, fixed, index), **grey)
    axes[0, 1].set_title("low resolution (nearest)")
    for row, (name, pred) in enumerate(preds.items(), start=1):
        axes[row, 0].imshow(_plane(pred, fixed, index), **grey)
        axes[row, 0].set_title(name)
        image = axes[row, 1].imshow(
            _plane(errors[name], fixed, index), cmap="coolwarm", vmin=-limit, vmax=limit,
            origin="lower", aspect=aspect, interpolation="nearest")
        axes[row, 1].set_title(f"{name} − truth")
        fig.colorbar(image, ax=axes[row, 1], shrink=0.8)
    for ax in axes.ravel():
        ax.set_xlabel(f"axis {cols_axis}")
        ax.set_ylabel(f"axis {rows_axis}")
    fig.suptitle(title or f"plane at index {index} of axis {fixed}; degraded axis {axis}")
    fig.savefig(path)
    return Path(path)
