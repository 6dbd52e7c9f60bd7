"""The common grid of several stacks: their shared (or joint) extent, on isotropic voxels in
the reference stack's orientation, and resampling onto it under a rigid transform.

Extents are compared in the reference stack's axes: each stack's box (its voxels' outer
faces, index ``-0.5 .. n - 0.5``) is bounded by an axis-aligned box there, and the grid covers
their intersection (``"common"``) or their union. For orthogonal stacks those boxes are exact;
for an oblique or moved stack the bound is looser than its box, so the common grid is then cut
to the voxels every stack covers (:func:`covered_part`). Voxels of the grid that a stack does
not see are left to the other stacks (each stack's data term counts only the voxels it sees,
:mod:`medsr.fusion.operators`).

Transforms are 4×4 RAS matrices that map a point of a stack's world (where its header puts it)
to the reference's world: the identity means the header is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size

EXTENTS = ("common", "union")
#: the common extent must be at least this many grid voxels along every axis
MIN_VOXELS = 4


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` ``(X, Y, Z)`` and its RAS voxel-to-world ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return voxel_size(self.affine)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def directions(affine: np.ndarray) -> np.ndarray:
    """The unit column directions (3×3) of an affine."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return a / np.linalg.norm(a, axis=0)


def corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (8×3) of the outer corners of a grid's voxels."""
    idx = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                    for k in (-0.5, shape[2] - 0.5)])
    a = np.asarray(affine, dtype=np.float64)
    return idx @ a[:3, :3].T + a[:3, 3]


def stack_box(shape: Sequence[int], affine: np.ndarray, axes: np.ndarray,
              transform: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` (mm) of a stack's box along the unit columns of ``axes``, after
    ``transform`` (stack world -> reference world)."""
    pts = corners(shape, affine)
    if transform is not None:
        t = np.asarray(transform, dtype=np.float64)
        pts = pts @ t[:3, :3].T + t[:3, 3]
    u = pts @ axes
    return u.min(axis=0), u.max(axis=0)


def centre_of(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World (RAS) position of a grid's centre."""
    a = np.asarray(affine, dtype=np.float64)
    return a[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2) + a[:3, 3]


def default_spacing(affines: Sequence[np.ndarray]) -> float:
    """The finest in-plane spacing of the stacks (each stack's smallest voxel size)."""
    return float(min(voxel_size(a).min() for a in affines))


def common_grid(shapes: Sequence[Sequence[int]], affines: Sequence[np.ndarray], *,
                spacing: Sequence[float] | float | None = None, extent: str = "common",
                reference: int = 0, transforms: Sequence[np.ndarray] | None = None,
                names: Sequence[str] | None = None) -> Grid:
    """The grid the stacks are fused on.

    Args:
        shapes, affines: each stack's ``(X, Y, Z)`` and RAS affine.
        spacing: mm, one number (isotropic) or one per grid axis; default the finest
            in-plane spacing of the stacks.
        extent: ``"common"`` (the part every stack covers) or ``"union"``.
        reference: the stack whose orientation (axis directions and order) the grid takes.
        transforms: each stack's rigid transform (stack world -> reference world).
        names: the stacks' names, for the error message.

    Raises:
        MedsrError: unknown extent, bad spacing, or stacks whose fields of view do not
            overlap (the common extent is under :data:`MIN_VOXELS` voxels along an axis).
    """
    if extent not in EXTENTS:
        raise MedsrError(f"unknown extent {extent!r}; choose one of {', '.join(EXTENTS)}")
    sp = np.broadcast_to(np.asarray(default_spacing(affines) if spacing is None else spacing,
                                    dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise MedsrError(f"the spacing must be positive, got {list(np.ravel(spacing))}")
    axes = directions(affines[reference])
    boxes = [stack_box(s, a, axes, None if transforms is None else transforms[i])
             for i, (s, a) in enumerate(zip(shapes, affines))]
    lows, highs = np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes])
    if extent == "common":
        lo, hi = lows.max(axis=0), highs.min(axis=0)
        short = (hi - lo) < MIN_VOXELS * sp
        if np.any(short):
            labels = list(names) if names is not None else [f"stack {i + 1}"
                                                             for i in range(len(shapes))]
            worst = int(np.argmax(short * (MIN_VOXELS * sp - (hi - lo))))
            a, b = int(np.argmax(lows[:, worst])), int(np.argmin(highs[:, worst]))
            raise MedsrError(
                f"the stacks' fields of view do not overlap: {labels[a]} starts "
                f"{lows[a, worst] - highs[b, worst]:.1f} mm beyond the end of {labels[b]} "
                f"along the reference's array axis {worst} (stacks of one subject and session "
                "are needed; or pass --extent union)"
                if lows[a, worst] >= highs[b, worst] else
                f"the stacks' fields of view overlap by only {hi[worst] - lo[worst]:.1f} mm "
                f"along the reference's array axis {worst} (stacks of one subject and session "
                "are needed; or pass --extent union)")
    else:
        lo, hi = lows.min(axis=0), highs.max(axis=0)
    # voxel faces on the reference's own (the first one's, then every spacing), so that at
    # its spacing its samples need no interpolation; the common extent keeps the voxels inside
    # it, the union covers it all
    ref = np.asarray(affines[reference], dtype=np.float64)
    edge = axes.T @ ref[:3, 3] - voxel_size(ref) / 2
    a, b = (lo - edge) / sp, (hi - edge) / sp  # the extent's ends, in voxels from that face
    if extent == "common":
        k0, k1 = np.ceil(a - 1e-6), np.floor(b + 1e-6) - 1
    else:
        k0, k1 = np.floor(a + 1e-6), np.ceil(b - 1e-6) - 1
    shape = np.maximum(1, k1 - k0 + 1).astype(int)
    first = edge + (k0 + 0.5) * sp
    affine = np.eye(4)
    affine[:3, :3] = axes * sp
    affine[:3, 3] = axes @ first
    return Grid((int(shape[0]), int(shape[1]), int(shape[2])), affine)


def covered_part(grid: Grid, shapes: Sequence[Sequence[int]], affines: Sequence[np.ndarray],
                 transforms: Sequence[np.ndarray], reference: int = 0) -> Grid:
    """The grid cut to the bounding box of the voxels that every stack covers (tighter than
    the boxes' bounds when stacks are oblique or were moved), widened to whole voxels of
    the reference (whose cut slices would drop out of the fit); the grid itself when no
    voxel is covered."""
    maps = [np.linalg.inv(index_map(grid.affine, a, t)) for a, t in zip(affines, transforms)]
    i, j = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
    hits = [np.zeros(n, dtype=bool) for n in grid.shape]
    for k in range(grid.shape[2]):
        pts = np.stack([i, j, np.full_like(i, k)], axis=-1).astype(np.float64)
        keep = np.ones(i.shape, dtype=bool)
        for m, shape in zip(maps, shapes):
            idx = pts @ m[:3, :3].T + m[:3, 3]
            keep &= np.all((idx >= -0.5 - 1e-6) & (idx <= np.asarray(shape) - 0.5 + 1e-6),
                           axis=-1)
        hits[0] |= keep.any(axis=1)
        hits[1] |= keep.any(axis=0)
        hits[2][k] = keep.any()
    if not hits[2].any():
        return grid
    lo = np.array([int(np.argmax(h)) for h in hits], dtype=float)
    hi = np.array([len(h) - int(np.argmax(h[::-1])) for h in hits], dtype=float)
    # the reference's voxel faces in grid voxels (the grid has its axes, in its order)
    ref = np.linalg.inv(maps[reference])  # reference index -> grid index
    step = np.diag(ref)[:3]
    if np.allclose(ref[:3, :3], np.diag(step)) and np.all(step > 0):
        face = ref[:3, 3] - step / 2 + 0.5  # grid index of the reference's first face
        whole_lo = face + np.floor((lo - face) / step + 1e-6) * step
        whole_hi = face + np.ceil((hi - face) / step - 1e-6) * step
        on_grid = np.abs(whole_lo - np.round(whole_lo)) < 1e-6
        lo = np.where(on_grid & (whole_lo >= -1e-6), np.round(whole_lo), lo)
        on_grid = np.abs(whole_hi - np.round(whole_hi)) < 1e-6
        hi = np.where(on_grid & (whole_hi <= np.asarray(grid.shape) + 1e-6), np.round(whole_hi),
                      hi)
    lo, hi = lo.astype(int), hi.astype(int)
    shift = np.eye(4)
    shift[:3, 3] = lo
    return Grid(tuple(int(b - a) for a, b in zip(lo, hi)), grid.affine @ shift)


def index_map(grid_affine: np.ndarray, stack_affine: np.ndarray,
              transform: np.ndarray | None = None) -> np.ndarray:
    """4×4 map from a stack's voxel index to the grid's voxel index (through the stack's
    rigid transform)."""
    t = np.eye(4) if transform is None else np.asarray(transform, dtype=np.float64)
    return np.linalg.solve(np.asarray(grid_affine, dtype=np.float64),
                           t @ np.asarray(stack_affine, dtype=np.float64))


def resample_onto(array: np.ndarray, affine: np.ndarray, grid: Grid,
                  transform: np.ndarray | None = None, method: str = "bspline",
                  outside: float = 0.0) -> np.ndarray:
    """A stack (or any volume) on the grid: ``out[g] = array`` at the stack point that the
    transform carries onto grid voxel ``g``; cubic B-spline or linear (SimpleITK, in index
    space); ``outside`` where the point falls off the stack (beyond half a voxel)."""
    import SimpleITK as sitk

    interpolators = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear,
                     "nearest": sitk.sitkNearestNeighbor}
    # grid index -> stack index
    m = np.linalg.inv(index_map(grid.affine, affine, transform))
    # sitk images in index space, axes reversed to (Z, Y, X) arrays: identity geometry
    source = sitk.GetImageFromArray(np.ascontiguousarray(
        np.asarray(array, dtype=np.float32).transpose(2, 1, 0)))
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in grid.shape])
    f.SetTransform(tx)
    f.SetInterpolator(interpolators[method])
    f.SetDefaultPixelValue(float(outside))
    f.SetOutputPixelType(sitk.sitkFloat32)
    out = f.Execute(source)
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(out).transpose(2, 1, 0))
