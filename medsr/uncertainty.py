"""A calibrated voxel-wise uncertainty (standard deviation, in the scan's units).

A learned output's uncertainty comes from the model itself: the *spread* of its members (the
plane views of a 2D network, see :mod:`medsr.inference`) and the size of its *refinement*
(how far it moved from the B-spline it started from). The standard deviation is modelled as

    sd = k · sqrt(α·spread² + β·refinement² + γ²)

and calibrated on data whose truth is known: the scan's own in-plane slices, degraded exactly
as the thick axis is (:func:`medsr.selfsup.inplane_truth`), run through the same network and
consistency projection. When the plane itself is upscaled (in-plane SR, every axis at once)
no finer truth exists, so the scan is degraded once more by the request's own operators and
upscaled back to its own grid (self-similarity across scales, :func:`calibrate_self_similar`).
``α, β, γ ≥ 0`` are a least-squares fit of the squared error, then ``k`` is set so that
``|error| ≤ 2·sd`` holds for 95 % of body voxels, as for a Gaussian. The same procedure serves
every learned method, shipped, user-trained or self-supervised.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)

COVERAGE = 0.95


@dataclass(frozen=True)
class Calibration:
    """Parameters of the standard-deviation model (see the module doc)."""

    alpha: float
    beta: float
    gamma: float
    k: float
    #: share of the calibration voxels with ``|error| ≤ 2 sd``, and the rank correlation of
    #: sd with ``|error|`` there (``None`` when not calibrated by :func:`calibrate`)
    coverage: float | None = None
    rank_correlation: float | None = None

    def sd(self, spread: np.ndarray, refinement: np.ndarray) -> np.ndarray:
        """The standard deviation map for the given spread and refinement maps."""
        var = np.square(spread, dtype=np.float32)  # in place from here: two maps at most
        var *= np.float32(self.alpha)
        part = np.square(refinement, dtype=np.float32)
        part *= np.float32(self.beta)
        var += part
        del part
        var += np.float32(self.gamma ** 2)
        np.sqrt(var, out=var)
        var *= np.float32(self.k)
        return var

    def as_dict(self) -> dict:
        return asdict(self)


def spread(members: list[np.ndarray]) -> np.ndarray:
    """Standard deviation over the members (zero for a single member)."""
    if len(members) < 2:
        return np.zeros_like(members[0])
    if len(members) == 2:  # |a - b| / 2, without stacking (the usual two plane views)
        out = np.subtract(members[0], members[1], dtype=np.float32)
        np.abs(out, out=out)
        out *= np.float32(0.5)
        return out
    return np.std(np.stack(members), axis=0).astype(np.float32)


def _nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient ≥ 0 (exhaustive over the few columns)."""
    best, best_cost = np.zeros(a.shape[1]), float(np.sum(b * b))
    for r in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), r):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.all(x >= 0):
                full = np.zeros(a.shape[1])
                full[list(cols)] = x
                cost = float(np.sum((a @ full - b) ** 2))
                if cost < best_cost:
                    best, best_cost = full, cost
    return best


def fit(spread_values: np.ndarray, refinement: np.ndarray, error: np.ndarray,
        coverage: float = COVERAGE) -> Calibration:
    """Fit ``α, β, γ`` to the squared error, then ``k`` for ``coverage`` at 2 sd."""
    s2 = np.square(spread_values, dtype=np.float64).ravel()
    r2 = np.square(refinement, dtype=np.float64).ravel()
    e2 = np.square(error, dtype=np.float64).ravel()
    a = np.stack([s2, r2, np.ones_like(s2)], axis=1)
    alpha, beta, g2 = _nonnegative_lstsq(a, e2)
    floor = 1e-6 * float(np.sqrt(np.mean(e2)) or 1.0)
    g2 = max(g2, floor ** 2)
    base = np.sqrt(alpha * s2 + beta * r2 + g2)
    k = float(np.quantile(np.sqrt(e2) / (2.0 * base), coverage))
    return Calibration(float(alpha), float(beta), float(np.sqrt(g2)), max(k, 1e-6))


def coverage_and_rank(sd: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """Share of voxels with ``|error| ≤ 2 sd``, and Spearman's rank correlation of sd with
    ``|error|``."""
    sd, err = np.ravel(sd).astype(np.float64), np.abs(np.ravel(error)).astype(np.float64)
    cover = float(np.mean(err <= 2.0 * sd))
    if sd.size > 2_000_000:
        pick = np.random.default_rng(0).choice(sd.size, 2_000_000, replace=False)
        sd, err = sd[pick], err[pick]
    ranks = [np.argsort(np.argsort(v, kind="stable")).astype(np.float64) for v in (sd, err)]
    rho = float(np.corrcoef(*ranks)[0, 1]) if np.std(ranks[0]) > 0 else 0.0
    return cover, rho


def calibrate(up, reference: np.ndarray, consistency: bool = True,
              max_planes: int = 24) -> Calibration:
    """Calibrate a learned upscaler on the scan's own in-plane truth (see the module doc).

    Args:
        up: a prepared :class:`medsr.methods.ModelUpscaler` (or self-supervised one).
        reference: the 3D volume it upscales (scan units).
        consistency: apply the consistency projection as the real output does.
        max_planes: planes (slices across the thick axis) used, spread over the body.
    """
    from medsr.consistency import project
    from medsr.metrics import otsu_threshold
    from medsr.noise import projection_gain
    from medsr.resample import upsample_axis
    from medsr.selfcheck import inplane_pairs, predict_pair

    if up.axis is None:
        return calibrate_self_similar(up, reference, consistency)
    lo = otsu_threshold(reference)
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for truth, lr in inplane_pairs(up, reference, max_planes, match_noise=True):
        views = predict_pair(up, lr)
        estimate = np.mean(views, axis=0, dtype=np.float32)
        if consistency:
            estimate = project(estimate, lr, 2, up.factor, up.profile,
                               gain=projection_gain(up, [(estimate, lr)]))
        baseline = upsample_axis(lr, 2, up.factor, "bspline")
        mask = truth > lo
        pieces.append((spread(views)[mask], (estimate - baseline)[mask],
                       (estimate - truth)[mask]))
    s, r, e = (np.concatenate(p) for p in zip(*pieces))
    cal = fit(s, r, e)
    cover, rho = coverage_and_rank(cal.sd(s, r), e)
    logger.info("uncertainty calibrated on %d in-plane voxels: %s (coverage %.3f, rank "
                "correlation %.2f)", e.size, cal, cover, rho)
    return replace(cal, coverage=round(cover, 4), rank_correlation=round(rho, 4))


def calibrate_self_similar(up, reference: np.ndarray, consistency: bool = True) -> Calibration:
    """Calibrate on the scan itself one scale down (:func:`medsr.selfcheck.scale_down`): the
    scan degraded by the request's operators and upscaled back, against the scan, over the
    body (Otsu).

    Errors one scale down are larger than at the scan's own scale (the input there is
    coarser), so the fitted sd is scaled by the ratio of the RMS errors one and two scales
    down (the scan degraded twice), the error's own trend across scales; without room for a
    second scale the sd stays as fitted one scale down (conservative).
    """
    from medsr.errors import MedsrError
    from medsr.metrics import otsu_threshold
    from medsr.selfcheck import scale_down

    lo = otsu_threshold(reference)
    once = scale_down(up, reference, consistency)
    s, r, e = _maps(up, lo, *once[:4])
    cal = fit(s, r, e)
    try:  # the same, from the scan one scale down (its LR side) to two
        e2 = _maps(up, lo, *scale_down(up, once[1], consistency)[:4])[2]
    except MedsrError:
        e2 = np.empty(0)
    if e2.size > 100:
        trend = float(np.clip(np.sqrt(np.mean(np.square(e, dtype=np.float64))
                                      / np.mean(np.square(e2, dtype=np.float64))), 0.2, 1.0))
        cal = replace(cal, k=cal.k * trend)
        logger.info("error one scale down / two scales down: %.3f (sd scaled by it)", trend)
    cover, rho = coverage_and_rank(cal.sd(s, r), e)
    logger.info("uncertainty calibrated one scale down on %d voxels: %s (coverage %.3f there, "
                "rank correlation %.2f)", e.size, cal, cover, rho)
    return replace(cal, coverage=round(cover, 4), rank_correlation=round(rho, 4))


def _maps(up, lo: float, truth: np.ndarray, lr: np.ndarray, members: list[np.ndarray],
          estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spread, refinement and error over the body (``truth > lo``) of a scale-down result."""
    from medsr.consistency import bspline_axes

    mask = truth > lo
    return (spread(members)[mask], (estimate - bspline_axes(lr, up.operators()))[mask],
            (estimate - truth)[mask])
