"""Intensity normalisation per modality, invertible, described by a JSON-able dict.

The description is stored in a model's card so that inference normalises the same way and maps
the network output back to the scan's units (HU for CT).

- CT: a fixed HU window mapped to [0, 1] (``{"kind": "window", "lo": -1024, "hi": 3071}``);
  values outside the window are kept (not clipped) so nothing is lost on the way back.
- MR (and unknown): robust percentile scaling per volume (``{"kind": "percentile",
  "lower": 0.5, "upper": 99.5}``): the lower and upper percentiles of the volume map to 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CT_WINDOW = {"kind": "window", "lo": -1024.0, "hi": 3071.0}
MR_PERCENTILE = {"kind": "percentile", "lower": 0.5, "upper": 99.5}


def default_normalization(modality: str | None) -> dict:
    """The normalisation medsr uses for a modality (CT window, else MR percentiles)."""
    return dict(CT_WINDOW if modality == "CT" else MR_PERCENTILE)


@dataclass(frozen=True)
class Scaling:
    """``y = (x - offset) / scale`` and back."""

    offset: float
    scale: float

    def forward(self, x):
        return (x - self.offset) / self.scale

    def inverse(self, y):
        return y * self.scale + self.offset


def fit_scaling(array: np.ndarray | torch.Tensor, spec: dict) -> Scaling:
    """The scaling that ``spec`` defines for this volume."""
    if spec["kind"] == "window":
        lo, hi = float(spec["lo"]), float(spec["hi"])
    elif spec["kind"] == "percentile":
        data = array.detach().cpu().numpy() if hasattr(array, "detach") else array  # a tensor
        flat = np.asarray(data, dtype=np.float32).ravel()
        if flat.size > 2_000_000:  # percentiles of a strided subsample: same to ~1e-3
            flat = flat[:: flat.size // 1_000_000]
        lo, hi = (float(v) for v in np.percentile(flat, [spec["lower"], spec["upper"]]))
    else:
        raise ValueError(f"unknown normalisation kind {spec['kind']!r}")
    return Scaling(lo, hi - lo if hi > lo else 1.0)


def guess_modality(array: np.ndarray) -> str:
    """``"CT"`` when a good share of voxels sits at air in HU (≤ -900), else ``"MR"``."""
    flat = np.asarray(array).ravel()
    sample = flat[:: max(1, flat.size // 1_000_000)]
    return "CT" if float(np.mean(sample <= -900)) > 0.02 else "MR"
