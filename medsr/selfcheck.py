"""Never worse than interpolation, per scan: check a learned method on the scan's own truth.

A thick-slice scan has no through-plane truth, but its in-plane slices are high resolution:
degraded along one in-plane axis exactly as the thick axis is (:func:`medsr.selfsup.
inplane_truth`, the pairs the uncertainty calibration uses too), they are pairs whose truth is
known. A few planes spread over the body are upscaled by the learned method (with the
consistency projection, as the real output is) and by B-spline; the PSNR of each against the
truth, inside the body, tells whether the network beats interpolation *on this scan*.
:func:`medsr.upscale` stores both figures in ``meta["medsr_selfcheck"]``, and ``method="auto"``
falls back to B-spline when the network does not win.

Example:
    >>> check = self_check(up, volume)                      # doctest: +SKIP
    >>> check.learned_psnr, check.bspline_psnr, check.passed  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: planes per in-plane truth view used by the self-check (two views: twice as many)
CHECK_PLANES = 6


@dataclass(frozen=True)
class SelfCheck:
    """PSNR (dB, inside the body) of the learned method and of B-spline on in-plane pairs."""

    learned_psnr: float
    bspline_psnr: float
    planes: int
    gain: float = 1.0  # of the consistency projection, measured on these pairs

    @property
    def passed(self) -> bool:
        """The learned method beats B-spline on this scan's pairs."""
        return self.learned_psnr > self.bspline_psnr

    def as_dict(self) -> dict:
        return {"learned_psnr": round(self.learned_psnr, 3),
                "bspline_psnr": round(self.bspline_psnr, 3), "planes": self.planes,
                "passed": self.passed}

    def describe(self, name: str) -> str:
        return (f"self-check on {self.planes} in-plane slice{'' if self.planes == 1 else 's'} "
                f"of the scan: {name} "
                f"{self.learned_psnr:.2f} dB, B-spline {self.bspline_psnr:.2f} dB")


def inplane_pairs(up, reference: np.ndarray, max_planes: int, match_noise: bool = False,
                  slices=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(truth, lr)`` stacks ``(planes, b, a)`` from the scan's in-plane truth: up to
    ``max_planes`` planes per view, spread over the body, degraded along ``a`` (last) with the
    thick axis's slice profile.

    Args:
        slices: only these slices along the thick axis (default: any in the body).
        match_noise: top the LR stacks' noise up to the scan's own (:func:`medsr.noise.scan_noise`):
            degrading averages the in-plane noise down, while the real thick slices carry it
            whole, so without this a network that copies noise looks better than it is.

    Raises:
        MedsrError: the scan has no high-resolution plane to learn from.
    """
    from medsr.consistency import degrade
    from medsr.inplane import inplane_truth, profile_variance
    from medsr.metrics import otsu_threshold
    from medsr.noise import scan_noise, top_up_sd

    f, prof = up.factor, up.profile
    lo = otsu_threshold(reference)
    top_up = 0.0
    if match_noise:
        top_up = top_up_sd(scan_noise(up, reference, lo), profile_variance(f, prof))
    rng = np.random.default_rng(0)
    pairs = []
    for a, plane, volume in inplane_truth(reference, up.affine, up.axis, f):
        b = next(p for p in plane if p != a)
        stack = np.ascontiguousarray(np.moveaxis(volume, (up.axis, b, a), (0, 1, 2)))
        means = stack.reshape(stack.shape[0], -1).mean(axis=1)
        body = np.flatnonzero(means > lo) if np.any(means > lo) else np.arange(len(means))
        if slices is not None:  # those in this scan's body (none: any in the body)
            held = np.intersect1d(np.asarray(slices, dtype=int), body)
            body = held if len(held) else body
        pick = body[np.linspace(0, len(body) - 1, min(max_planes, len(body))).astype(int)]
        truth = stack[np.unique(pick)]
        lr = degrade(truth, 2, f, prof)  # the cropped truth holds whole LR voxels
        if top_up > 0:
            lr = lr + rng.normal(0.0, top_up, lr.shape).astype(np.float32)
        pairs.append((truth, lr))
    return pairs


def predict_pair(up, lr: np.ndarray) -> list[np.ndarray]:
    """The learned method's views of an LR stack ``(planes, b, a/f)``: the plane view and its
    mirror (standing in for the real output's two plane views). A network whose one graph
    serves every plane width runs as the output's planes do (ONNX Runtime on a CPU); others
    in PyTorch (a few planes: no export for their width)."""
    from medsr.inference import predict_views
    from medsr.runtime import width_free

    backend = "auto" if width_free(up.net) else "torch"
    views = []
    for flip in (False, True):
        x = lr[:, ::-1].copy() if flip else lr
        v = predict_views(x, (1, 1, up.factor), up.net, up.card, device=up.device,
                          spacing=(1e3, 1.0, 1.0), scaling=up.scaling, backend=backend)[0]
        views.append(v[:, ::-1] if flip else v)
    return views


def self_check(up, reference: np.ndarray, consistency: bool = True,
               max_planes: int = CHECK_PLANES, match_noise: bool = True) -> SelfCheck:
    """Compare a prepared learned upscaler with B-spline on the scan's in-plane pairs.

    Args:
        up: a prepared :class:`medsr.methods.ModelUpscaler` (or self-supervised one).
        reference: the 3D volume it upscales (scan units).
        consistency: apply the consistency projection, as the real output does.
        max_planes: planes per in-plane view.
        match_noise: the pairs' LR carries the scan's noise (see :func:`inplane_pairs`).

    Raises:
        MedsrError: the scan has no high-resolution plane to check on.
    """
    from medsr.consistency import project
    from medsr.metrics import otsu_threshold
    from medsr.noise import projection_gain
    from medsr.resample import upsample_axis

    lo = otsu_threshold(reference)
    peak = float(reference.max() - reference.min()) or 1.0
    if up.axis is None:  # the plane itself is upscaled: no finer truth, one scale down
        return _self_similar_check(up, reference, consistency, 2 * max_planes, lo, peak)
    sums, count, planes = np.zeros(2), 0, 0
    # a self-supervised fit learned from the scan's slices but those it held out: check on
    # these, or the check scores its own training data
    # (a saved fit reused on the same scan checks the same slices, so its output is the same)
    held = (getattr(up, "card", None) or {}).get("self_supervised", {}).get("held_out_slices")
    pairs = [(truth, lr, np.mean(predict_pair(up, lr), axis=0, dtype=np.float32))
             for truth, lr in inplane_pairs(up, reference, max_planes, match_noise, held)]
    # one gain over every view's stack (planes, b, a/f), its planes across axis 0
    gain = projection_gain(up, [(est, lr) for _, lr, est in pairs],
                           [(2, up.factor, up.profile)], 0) if consistency else 1.0
    for truth, lr, estimate in pairs:
        if consistency:
            estimate = project(estimate, lr, 2, up.factor, up.profile, gain=gain)
        baseline = upsample_axis(lr, 2, up.factor, "bspline")
        mask = truth > lo
        for i, guess in enumerate((estimate, baseline)):
            sums[i] += float(np.sum(np.square(guess[mask] - truth[mask], dtype=np.float64)))
        count += int(mask.sum())
        planes += truth.shape[0]
    psnr = [math.inf if s == 0 else 10 * math.log10(peak * peak * max(count, 1) / s)
            for s in sums]
    return SelfCheck(psnr[0], psnr[1], planes, gain)


def try_self_check(up, reference: np.ndarray, consistency: bool = True) -> SelfCheck | None:
    """:func:`self_check`, or ``None`` (logged) when the scan has no plane to check on."""
    from medsr.errors import MedsrError

    try:
        check = self_check(up, reference, consistency=consistency)
    except MedsrError as err:
        logger.info("self-check skipped: %s", err)
        return None
    logger.info("%s", check.describe(up.name))
    return check


def scale_down(up, volume: np.ndarray, consistency: bool = True,
               planes: tuple[int, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray, float]:
    """``(truth, lr, members, estimate, gain)`` one scale down: ``volume`` cropped to whole LR
    voxels (``planes = (n, lo)``: only ``n`` planes spread over the body, intensity above
    ``lo``, across an axis the request leaves alone), degraded by the request's own operators
    (``up.operators()``) and upscaled back by ``up``'s members, their mean projected with
    ``gain`` (:func:`medsr.noise.projection_gain`; 1 without the projection).

    The truth for in-plane SR and chains, which have no finer plane in the scan: the check
    here and the uncertainty calibration (:mod:`medsr.uncertainty`) use it.

    Raises:
        MedsrError: an upscaled axis too short for its factor twice over.
    """
    from medsr.consistency import degrade_axes, noise_variance_ratio, project_axes
    from medsr.errors import MedsrError
    from medsr.noise import add_top_up, projection_gain, top_up_sd

    ops = up.operators()
    index = [slice(None)] * 3
    for axis, factor, _ in ops:
        n = volume.shape[axis] // factor * factor
        if n < 2 * factor:
            raise MedsrError(f"axis {axis} is too short to check ×{factor} on the scan")
        index[axis] = slice(0, n)
    truth = volume[tuple(index)]
    kept = [a for a in range(3) if a not in {op[0] for op in ops}]
    if planes is not None and kept:  # planes spread over the body along a kept axis
        count, lo = planes
        stack = kept[0]
        means = np.moveaxis(truth, stack, 0).reshape(truth.shape[stack], -1).mean(axis=1)
        body = np.flatnonzero(means > lo) if np.any(means > lo) else np.arange(len(means))
        pick = np.unique(body[np.linspace(0, len(body) - 1,
                                          min(count, len(body))).astype(int)])
        truth = np.take(truth, pick, axis=stack)
    truth = np.ascontiguousarray(truth, dtype=np.float32)
    lr = degrade_axes(truth, ops)
    sd = up.noise_sd or 0.0  # the scan's noise, which the real input carries whole
    lr = add_top_up(lr, top_up_sd(sd, noise_variance_ratio(lr.shape, ops)))
    members = up.predict(lr)
    estimate = np.mean(members, axis=0, dtype=np.float32)
    gain = 1.0
    if consistency:
        gain = projection_gain(up, [(estimate, lr)])
        estimate = project_axes(estimate, lr, ops, gain=gain)
    return truth, lr, members, estimate, gain


def _self_similar_check(up, reference: np.ndarray, consistency: bool, max_planes: int,
                        lo: float, peak: float) -> SelfCheck:
    """The check for in-plane SR and chains (:func:`scale_down`): the network against
    B-spline on the scan degraded once more, a few body planes when one axis is left alone."""
    from medsr.consistency import bspline_axes

    truth, lr, _, estimate, gain = scale_down(up, reference, consistency, (max_planes, lo))
    mask = truth > lo
    sums = [float(np.sum(np.square(g[mask] - truth[mask], dtype=np.float64)))
            for g in (estimate, bspline_axes(lr, up.operators()))]
    psnr = [math.inf if v == 0 else 10 * math.log10(peak * peak * max(int(mask.sum()), 1) / v)
            for v in sums]
    kept = [a for a in range(3) if a not in {op[0] for op in up.operators()}]
    return SelfCheck(psnr[0], psnr[1], int(truth.shape[kept[0]]) if kept else 1, gain)
