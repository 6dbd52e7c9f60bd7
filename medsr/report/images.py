"""PNG images of a report, drawn with matplotlib from the arrays (no display, no global
backend: :mod:`matplotlib.image` and an Agg ``Figure``), returned as bytes for embedding."""

from __future__ import annotations

import io

import numpy as np

#: colour map of the uncertainty overlay
SD_CMAP = "inferno"


def window(*images: np.ndarray) -> tuple[float, float]:
    """Grey-level window ``(lo, hi)``: the 0.5th and 99.5th percentiles of the images."""
    values = np.concatenate([np.ravel(i) for i in images]).astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _png(rgba: np.ndarray) -> bytes:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgba, format="png")
    return buf.getvalue()


def grey(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """RGBA float image of ``image`` in the window ``[lo, hi]``."""
    from matplotlib import colormaps

    return colormaps["gray"](np.clip((np.asarray(image, np.float64) - lo) / (hi - lo), 0, 1))


def grey_png(image: np.ndarray, lo: float, hi: float) -> bytes:
    """PNG of a 2D image (rows top to bottom) in the grey window ``[lo, hi]``."""
    return _png(grey(image, lo, hi))


def overlay_png(image: np.ndarray, sd: np.ndarray, lo: float, hi: float, sd_max: float
                ) -> bytes:
    """PNG of ``image`` in grey with ``sd`` over it in :data:`SD_CMAP`, more opaque where the
    standard deviation is larger (fully at ``sd_max``)."""
    from matplotlib import colormaps

    base = grey(image, lo, hi)
    level = np.clip(np.asarray(sd, np.float64) / (sd_max or 1.0), 0, 1)
    colour = colormaps[SD_CMAP](level)
    alpha = (0.85 * level)[..., None]
    out = base.copy()
    out[..., :3] = (1 - alpha) * base[..., :3] + alpha * colour[..., :3]
    return _png(out)


def signed_png(image: np.ndarray, limit: float) -> bytes:
    """PNG of a signed 2D image (a residual) in a diverging map, ``-limit`` blue to
    ``+limit`` red, 0 white."""
    from matplotlib import colormaps

    level = np.clip(np.asarray(image, np.float64) / (2 * (limit or 1.0)) + 0.5, 0, 1)
    return _png(colormaps["RdBu_r"](level))


def colorbar_png(vmax: float, label: str, vmin: float = 0.0) -> bytes:
    """PNG of a horizontal colour bar of :data:`SD_CMAP` from ``vmin`` to ``vmax``."""
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 0.75), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ColorbarBase(ax, cmap=SD_CMAP, norm=Normalize(vmin, vmax or 1.0), orientation="horizontal")
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    return _figure_png(fig)


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def profile_png(profile, axis_name: str) -> bytes:
    """PNG plot of a :class:`medsr.report.sampling.Profile`: the measured input samples, the
    cubic B-spline and the output along the line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(profile.positions, profile.bspline, color="tab:blue", lw=1.2, label="B-spline")
    ax.plot(profile.positions, profile.output, color="tab:red", lw=1.6, label="output")
    ax.plot(profile.input_positions, profile.input_values, "o", color="black", ms=5,
            label="input samples")
    ax.set_xlabel(f"position along {axis_name} (mm)")
    ax.set_ylabel("intensity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _figure_png(fig)


def thumbnail_png(image: np.ndarray, lo: float, hi: float, pixel: tuple[float, float],
                  size: int = 96) -> bytes:
    """A small PNG (longest side ``size`` px, physical aspect kept) for a study table."""
    from PIL import Image

    rgba = (grey(image, lo, hi) * 255).astype(np.uint8)
    h, w = rgba.shape[:2]
    width_mm, height_mm = w * pixel[0], h * pixel[1]
    scale = size / max(width_mm, height_mm)
    dims = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    buf = io.BytesIO()
    Image.fromarray(rgba).resize(dims, Image.Resampling.BILINEAR).save(buf, format="png")
    return buf.getvalue()
