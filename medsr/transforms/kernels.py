"""Slice-profile kernels in NumPy: what a thick slice weighs of the thin ones.

Below :mod:`medsr.transforms.degrade` (which applies them to tensors in training) and
:mod:`medsr.consistency` (which builds its matrices from them), so that inference builds the
acquisition operator without loading torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
TRUNCATE = 3.0  # Gaussian kernels end at ±3 sigma
PROFILES = ("box", "gaussian")


def check_factor(f: Any) -> int:
    """An integer factor >= 1, or a ValueError."""
    if isinstance(f, bool) or not float(f).is_integer() or f < 1:
        raise ValueError(f"factors must be integers >= 1, got {f!r}")
    return int(f)


def profile_kernel(factor: int, thickness: float | None = None, profile: str = "box"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Discrete slice profile around one LR voxel centre.

    Args:
        factor: slice spacing in HR voxels.
        thickness: slice thickness (FWHM) in HR voxels; default ``factor``.
        profile: ``"box"`` (voxel-integrated rectangle: edge voxels get the fraction of them
            inside) or ``"gaussian"`` (point samples, sigma = FWHM / 2.3548, ±3 sigma).

    Returns:
        ``(offsets, weights)``: HR index minus LR centre (half-integers for even factors) and
        float64 weights summing to 1.
    """
    f = check_factor(factor)
    t = float(f if thickness is None else thickness)
    if not t > 0:
        raise ValueError(f"thickness must be positive, got {thickness!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    s, h, sigma = (f - 1) / 2.0, t / 2.0, t / FWHM_PER_SIGMA
    reach = h + 0.5 if profile == "box" else max(TRUNCATE * sigma, 0.5)
    d = np.arange(math.ceil(s - reach - 1e-9), math.floor(s + reach + 1e-9) + 1) - s
    if profile == "box":  # overlap of each voxel [d - 1/2, d + 1/2] with [-t/2, t/2]
        w = np.clip(np.minimum(d + 0.5, h) - np.maximum(d - 0.5, -h), 0.0, None)
    else:
        w = np.exp(-0.5 * (d / sigma) ** 2)
    keep = w > 1e-12 * w.max()
    return d[keep], w[keep] / w[keep].sum()
