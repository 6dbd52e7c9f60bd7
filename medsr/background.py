"""Compute the plane networks only where the signal is: B-spline's values in the background.

Around a head or a chest much of the field of view is background: air in CT (CT padding is
read as air before this, :mod:`medsr.padding`), the noise floor in MR. A through-plane network
runs on whole planes that contain the upscaled axis; each plane is cropped here, across the
axis, to the rows of its *body lines* (lines along the upscaled axis holding a voxel above the
background threshold, and their neighbours) widened by the network's reach
(:func:`plane_reach`), and the rows outside the crop take the cubic B-spline along the axis,
which is what a :class:`medsr.nets.lrsr.LRRefiner` adds its correction to. Every body line is
then at least the reach away from a crop edge, so its output is computed from the same inputs
as before, bit for bit (``tests/test_background.py``; the consistency projection acts along
the axis, line by line, so it keeps them so). Only background lines change.

The threshold (:func:`plan`) is the scan's floor (its 1st percentile) plus the larger of
:data:`NOISE_SDS` noise standard deviations (:mod:`medsr.noise`) and :data:`RANGE_SHARE` of
its range (1st to 99.5th percentile), and never above Otsu's threshold: for CT about -900 HU,
above air and below lung; in MR a Rayleigh noise floor stays below 6 sd in all but 1.5e-8 of
its voxels.
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


@dataclass(frozen=True)
class Background:
    """What :func:`body_rows` needs: the threshold (scan units) and the network's reach."""

    threshold: float
    reach: int


def plane_reach(model) -> int:
    """How far (in voxels, across the planes' upscaled axis) a 2D network's output looks: the
    sum of its convolutions' reaches, counting one head of a multi-factor network (the one
    that runs) rather than all of them."""
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


def background_threshold(reference: np.ndarray, noise_sd: float) -> float:
    """The intensity (scan units) above which a voxel is signal (see the module doc)."""
    from medsr.metrics import otsu_threshold

    floor, bright = np.percentile(reference, [1.0, 99.5])
    level = floor + max(NOISE_SDS * noise_sd, RANGE_SHARE * (bright - floor))
    return float(min(level, otsu_threshold(reference)))


def plan(reference: np.ndarray, axis: int, model, card: dict,
         noise_sd: float | None = None) -> Background | None:
    """The background rule for a through-plane model upscaling ``axis`` of ``reference`` (the
    whole 3D volume, scan units), or ``None`` where it does not apply (3D networks, networks
    refining an interpolated input)."""
    from medsr.noise import noise_sd as measure

    if int(card.get("spatial_dims", 2)) != 2 or card.get("input", "lr") != "lr":
        return None
    sd = measure(reference, axis) if noise_sd is None else float(noise_sd)
    bg = Background(background_threshold(reference, sd), plane_reach(model))
    share = 1.0 - computed_share(body_rows(reference, axis, bg))
    logger.info("background: intensity below %.4g, %.0f %% of the lines along the axis take "
                "B-spline's values", bg.threshold, 100 * share)
    return bg




@dataclass(frozen=True)
class BodyRows:
    """Which rows of each plane hold body lines: per plane view, keyed by the axis its planes
    are stacked along, a boolean ``(planes, rows)``; and the network's reach, the margin a
    crop keeps around them."""

    views: dict[int, np.ndarray]
    reach: int

    def crop(self, stack: int, start: int, stop: int) -> tuple[int, int]:
        """The rows ``[lo, hi)`` a batch of planes ``[start, stop)`` runs the network on:
        from its first to its last body row, widened by the reach (``(0, 0)``: none)."""
        view = self.views[stack]
        rows = np.flatnonzero(view[start:stop].any(axis=0))
        if not len(rows):
            return 0, 0
        return max(0, int(rows[0]) - self.reach), min(view.shape[1], int(rows[-1]) + 1 + self.reach)


def body_rows(array: np.ndarray, axis: int, bg: Background) -> BodyRows:
    """The body lines of ``array`` (see :class:`BodyRows`): lines along ``axis`` holding a
    voxel above the threshold, or next to one (the noise estimate of :mod:`medsr.noise`
    reads neighbours). Each line is judged on itself and its neighbours only, so a slab with
    the network's halo judges its lines as the whole volume does."""
    from scipy.ndimage import binary_dilation

    lines = binary_dilation(np.any(array > bg.threshold, axis=axis),
                            structure=np.ones((3, 3), dtype=bool))
    first, second = (a for a in range(3) if a != axis)
    return BodyRows({first: lines, second: lines.T}, bg.reach)


def computed_share(body: BodyRows) -> float:
    """The share of lines along the axis that are body lines."""
    return float(next(iter(body.views.values())).mean())
