"""Compute the plane networks only where the signal is: B-spline's values in the background.

Around a head or a chest much of the field of view is background: air in CT (CT padding is
read as air before this, :mod:`medsr.padding`), the noise floor in MR. A through-plane network
runs on whole planes that contain the upscaled axis. Here a line along the upscaled axis is a
*body line* when a voxel of it, or of a line within the network's reach across the planes
(:func:`plane_reach`), is above the background threshold: every output voxel whose receptive
field touches the body lies on one. Each batch of planes runs the network only on the span of
its body rows widened by the reach again, so body lines are computed from the same inputs as
before, bit for bit (``tests/test_background.py``; the consistency projection acts along the
axis, line by line, and keeps them so); the other lines take the cubic B-spline along the
axis, which is what a :class:`medsr.nets.lrsr.LRRefiner` adds its correction to. A line is
judged on its neighbourhood only, so slabs (with the network's halo) and whole volumes agree.

Off by default (``ModelUpscaler.skip_background``, ``upscale_volume(skip_background=...)``):
on the held-out scans it saved too little to be worth a changed background (``docs/speed.md``).

The threshold (:func:`background_threshold`) is the scan's floor (1st percentile) plus the
larger of :data:`NOISE_SDS` noise sds (:mod:`medsr.noise`) and :data:`RANGE_SHARE` of its
range (to the 99.5th percentile), never above Otsu's threshold; in CT never above
:data:`CT_AIR_BELOW_HU` (a CT without air, or not in HU, skips nothing), and in MR only where
the floor is a noise floor (at most :data:`FLOOR_SDS` sds). For the head CT of the benchmarks
it is -908 HU, for T1 heads 5 % of the range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: the threshold is at least this many noise sds above the floor ...
NOISE_SDS = 6.0
#: ... and at least this share of the floor-to-bright range above it
RANGE_SHARE = 0.05
#: CT: air (-1000 HU) and its noise lie below; fat, soft tissue and most lung above
CT_AIR_BELOW_HU = -900.0
#: MR: a Rayleigh noise floor's 1st percentile is 0.14 sd; a floor above this many is tissue
FLOOR_SDS = 3.0


@dataclass(frozen=True)
class Background:
    """What :func:`body_rows` needs: the threshold (scan units) and the network's reach."""

    threshold: float
    reach: int


def plane_reach(model) -> int:
    """How far (in voxels, across the planes' upscaled axis) a 2D network's output looks: the
    sum of its convolutions' reaches, counting one head of a multi-factor network (the one
    that runs) rather than all of them."""
    from medsr.runtime import GraphNet

    if isinstance(model, GraphNet):
        return model.reach
    from torch import nn

    if isinstance(model, (nn.Conv2d, nn.Conv3d)):
        k, d = model.kernel_size[0], model.dilation[0]
        return (k - 1) // 2 * d
    total = 0
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleDict) and name == "heads":
            total += max((plane_reach(head) for head in child.values()), default=0)
        else:
            total += plane_reach(child)
    return total


def background_threshold(reference: np.ndarray, noise_sd: float, modality: str | None = None
                         ) -> float | None:
    """The intensity (scan units) above which a voxel is signal (see the module doc), or
    ``None`` when an MR scan has no noise floor."""
    from medsr.metrics import otsu_threshold

    floor, bright = np.percentile(reference, [1.0, 99.5])
    if modality == "MR" and floor > FLOOR_SDS * noise_sd:
        return None
    level = min(floor + max(NOISE_SDS * noise_sd, RANGE_SHARE * (bright - floor)),
                otsu_threshold(reference))
    return float(min(level, CT_AIR_BELOW_HU) if modality == "CT" else level)


def plan(reference: np.ndarray, axis: int, model, card: dict,
         noise_sd: float | None = None) -> Background | None:
    """The background rule for a through-plane model upscaling ``axis`` of ``reference`` (the
    whole 3D volume, scan units), or ``None`` where it does not apply (3D networks, networks
    refining an interpolated input, MR without a noise floor)."""
    from medsr.noise import noise_sd as measure

    if int(card.get("spatial_dims", 2)) != 2 or card.get("input", "lr") != "lr":
        return None
    sd = measure(reference, axis) if noise_sd is None else float(noise_sd)
    threshold = background_threshold(reference, sd, card.get("modality"))
    if threshold is None:
        logger.info("background: no noise floor (1st percentile over %g noise sds); every "
                    "line computed", FLOOR_SDS)
        return None
    bg = Background(threshold, plane_reach(model))
    share = 1.0 - computed_share(body_rows(reference, axis, bg))
    logger.info("background: intensity below %.4g; %.0f %% of the lines along the axis take "
                "B-spline's values", bg.threshold, 100 * share)
    return bg


@dataclass(frozen=True)
class BodyRows:
    """Which rows of each plane are body lines (the others take B-spline's values): per plane
    view, keyed by the axis its planes are stacked along, a boolean ``(planes, rows)``; and
    the network's reach, the margin a crop keeps around them."""

    views: dict[int, np.ndarray]
    reach: int

    def crop(self, stack: int, start: int, stop: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` a batch of planes ``[start, stop)`` runs the network on:
        from its first to its last body row, widened by the reach (``(0, 0)``: none)."""
        view = self.views[stack]
        rows = np.flatnonzero(view[start:stop].any(axis=0))
        if not len(rows):
            return 0, 0
        return (max(0, int(rows[0]) - self.reach),
                min(view.shape[1], int(rows[-1]) + 1 + self.reach))


def body_rows(array: np.ndarray, axis: int, bg: Background) -> BodyRows:
    """The body lines of ``array`` (see :class:`BodyRows` and the module doc): lines along
    ``axis`` within the reach (and one more: the noise estimate of :mod:`medsr.noise` reads
    neighbours) of a line holding a voxel above the threshold."""
    signal = np.any(array > bg.threshold, axis=axis)
    lines = _dilate(signal, bg.reach + 1)
    first, second = (a for a in range(3) if a != axis)
    return BodyRows({first: lines, second: lines.T}, bg.reach)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` along each axis (a square window, nothing beyond the
    edges); numpy only, as scipy is not a dependency of medsr."""
    from numpy.lib.stride_tricks import sliding_window_view

    out = mask
    for axis in range(mask.ndim):
        pad = [(0, 0)] * mask.ndim
        pad[axis] = (radius, radius)
        out = sliding_window_view(np.pad(out, pad), 2 * radius + 1, axis=axis).any(axis=-1)
    return out


def computed_share(body: BodyRows) -> float:
    """The share of lines along the axis that are body lines."""
    return float(next(iter(body.views.values())).mean())
