"""Place sorted DICOM slices on an even grid: exact positions, rounding wander, missing slices.

Scanners store ImagePositionPatient rounded (often to 0.1 mm or coarser in some axes), so the
gaps between slices of a perfectly regular acquisition wander by a few percent (a GE series
with 5 mm slices and 2 mm gaps: gaps between 6.958 and 7.071 mm). Such a series is one volume:
its grid is the least-squares line through the positions (the mean spacing), and the wander is
reported. A gap near a whole extra spacing is a missing slice, and positions that stray farther
than rounding explains are not one regular volume: both are refused in one line.

Positions within 1 % of the spacing of an even grid (what medsr, dcm2niix and most writers
produce) keep the grid of the first and last slices exactly, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsr.errors import MedsrError

log = logging.getLogger(__name__)

#: a gap this many times the median spacing means missing slices
MISSING_GAP = 1.5
#: largest distance of a slice from the fitted grid, in spacings, read as rounding
MAX_WANDER = 0.05


@dataclass(frozen=True)
class SliceGrid:
    """Where slice ``k`` lies: ``origin + k * step`` (LPS mm).

    Attributes:
        wander_mm: the largest distance of a slice from the grid when the grid was fitted
            (positions rounded), ``None`` when the positions lie on it exactly (within 1 %).
        gaps_mm: the smallest and largest gap between neighbouring slices along the normal.
    """

    origin: np.ndarray
    step: np.ndarray
    wander_mm: float | None
    gaps_mm: tuple[float, float]


def fit_slice_grid(positions: np.ndarray, normal: np.ndarray, names: Sequence[str]
                   ) -> SliceGrid:
    """The even grid of slices sorted along ``normal`` (``positions``: ``(n, 3)``, n ≥ 2).

    Raises:
        MedsrError: duplicate positions, a missing slice, or positions that are not an even
            line of slices (beyond :data:`MAX_WANDER` of the spacing).
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    gaps = np.diff(positions @ normal)
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        i = dup[0]
        raise MedsrError(f"duplicate slice position: {names[i]} and {names[i + 1]} lie at the "
                         "same place (several echoes, phases or stacks in one series?)")
    median = float(np.median(gaps))
    span = (round(float(gaps.min()), 4), round(float(gaps.max()), 4))
    index = np.arange(n, dtype=np.float64)[:, None]
    tol = max(0.01 * median, 0.01)
    step = (positions[-1] - positions[0]) / (n - 1)
    off = np.linalg.norm(positions - (positions[0] + index * step), axis=1).max()
    if np.all(np.abs(gaps - median) <= tol) and off <= tol:
        return SliceGrid(positions[0], step, None, span)
    big = np.flatnonzero(gaps > MISSING_GAP * median)
    if big.size:
        i = big[0]
        raise MedsrError(f"uneven slice spacing: gap of {round(float(gaps[i]), 3)} mm between "
                         f"slices {i + 1} and {i + 2}, median {round(median, 3)} mm "
                         "(missing slices?)")
    design = np.hstack([np.ones((n, 1)), index])
    (origin, step), *_ = np.linalg.lstsq(design, positions, rcond=None)
    wander = float(np.linalg.norm(positions - design @ np.stack([origin, step]), axis=1).max())
    spacing = abs(float(step @ normal))
    if wander > MAX_WANDER * spacing:
        along = float(np.abs((positions - design @ np.stack([origin, step])) @ normal).max())
        if along <= MAX_WANDER * spacing:
            raise MedsrError(f"slice positions do not lie on a straight line (up to "
                             f"{wander:.3f} mm off); cannot build a regular volume")
        i = int(np.argmax(np.abs(gaps - median)))
        raise MedsrError(f"uneven slice spacing: gap of {round(float(gaps[i]), 3)} mm between "
                         f"slices {i + 1} and {i + 2}, median {round(median, 3)} mm; the slices "
                         f"stray up to {wander:.3f} mm from an even grid, more than rounding "
                         f"({MAX_WANDER:.0%} of the spacing): not one regular volume")
    log.warning("slice positions wander by up to %.3f mm (%.1f %% of the spacing; gaps %.3f to "
                "%.3f mm): read on their least-squares grid, spacing %.4f mm",
                wander, 100 * wander / spacing, span[0], span[1], spacing)
    return SliceGrid(origin, step, round(wander, 4), span)
