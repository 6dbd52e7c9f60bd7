"""Each stack's forward operator from the common grid, and its exact adjoint.

A stack's voxel is the mean of the volume over that voxel's slice profile and in-plane pixel,
where the stack sat during its acquisition. :class:`StackOperator` writes that as ``A = D W``:

* ``W`` samples the grid's volume (trilinear, ``torch.nn.functional.grid_sample``) on the
  stack's *fine grid*, the stack's voxels subdivided along every axis coarser than the grid
  (``f = round(spacing / grid spacing)``, :mod:`medsr.geometry`'s subdivision convention),
  carried onto the grid by the stack's rigid transform (:mod:`medsr.fusion.grid`);
* ``D`` is :mod:`medsr.consistency`'s matrix along each subdivided axis (the slice profile
  along the thick axis, a box as wide as the pixel along a coarser in-plane axis): the same
  operator single-stack consistency reproduces, so a stack aligned with the grid is its
  ``slice_profile`` (:func:`medsr.transforms.degrade.slice_profile`) exactly.

A stack that was not moved, at the grid's spacing (the reference, always), has its fine
points on grid voxels: ``W`` is then a gather along each axis, exact and several times
faster. Otherwise, the adjoint ``Aᵀ = Wᵀ Dᵀ`` uses ``grid_sample``'s own backward (the
transpose of the trilinear weights, scattered back), so ``<A x, y> = <x, Aᵀ y>`` to round-off.
Both run slab by slab along
a stack axis that is not subdivided; the slabs' sample coordinates are made once and kept
(12 bytes per fine point: making them costs four times the sampling). A stack voxel whose
profile reaches outside the grid is not *seen* (:attr:`StackOperator.mask`) and takes no part
in the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from medsr.consistency import SliceProfile, degrade_matrix
from medsr.fusion.grid import Grid, index_map
from medsr.geometry import resampled_affine
from medsr.geometry import spacing as voxel_size

#: fine sample points per slab (their coordinates are 12 bytes each)
SLAB_POINTS = 2_000_000
#: a stack voxel is seen when the grid holds this share of its profile's weight
SEEN = 1.0 - 1e-3


def _along(x: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """Apply ``matrix`` (out × in) along ``axis`` of a tensor ``x``."""
    moved = x.movedim(axis, -1)
    return (moved @ matrix.T).movedim(-1, axis)


def fine_factors(stack_spacing: Sequence[float], grid_spacing: float) -> tuple[int, ...]:
    """Subdivision of each stack axis: its spacing over the grid's, rounded, at least 1."""
    return tuple(max(1, round(float(s) / grid_spacing)) for s in stack_spacing)


@dataclass
class StackOperator:
    """``A``: grid volume ``(X, Y, Z)`` -> a stack ``shape`` (see the module doc).

    Attributes:
        shape: the stack's array shape.
        affine: its RAS affine (where its header puts it).
        grid: the common grid.
        transform: its rigid transform, stack world -> reference world (identity: as the
            header says).
        profile: the slice profile of its thick axis (the axis of largest spacing).
        dtype: torch dtype of the computation (float64 for exact adjoint tests).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    grid: Grid
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    profile: SliceProfile = field(default_factory=SliceProfile)
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        sp = voxel_size(self.affine)
        self.factors = fine_factors(sp, float(self.grid.spacing.min()))
        self.thick_axis = int(np.argmax(sp))
        fine = resampled_affine(self.affine, [1.0 / f for f in self.factors])
        self._map = torch.as_tensor(index_map(self.grid.affine, fine, self.transform),
                                    dtype=torch.float64)
        self.fine_shape = tuple(n * f for n, f in zip(self.shape, self.factors))
        self.ops = [(a, f, self.profile if a == self.thick_axis else SliceProfile("box", 1.0))
                    for a, f in enumerate(self.factors) if f > 1]
        self._matrices = {a: torch.as_tensor(degrade_matrix(n, f, p), dtype=self.dtype)
                          for a, f, p in self.ops for n in (self.shape[a],)}
        self._gather = self._aligned()
        flat = [a for a in range(3) if self.factors[a] == 1]
        self.slab_axis = max(flat, key=lambda a: self.shape[a]) \
            if flat and self._gather is None else None
        self._mask: torch.Tensor | None = None
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    # the sample points ---------------------------------------------------------------------
    def slabs(self) -> list[tuple[int, int]]:
        """``[start, stop)`` ranges of the slab axis (the whole stack when none)."""
        if self.slab_axis is None:
            return [(0, 0)]
        n = self.shape[self.slab_axis]
        per = max(1, int(np.prod(self.fine_shape)) // n)
        step = max(1, SLAB_POINTS // per)
        return [(s, min(n, s + step)) for s in range(0, n, step)]

    def _coords(self, start: int, stop: int) -> torch.Tensor:
        """``grid_sample`` coordinates ``(1, *slab fine shape, 3)`` of a slab's fine points
        (made once: they cost four times the sampling)."""
        if (start, stop) not in self._cache:
            self._cache[start, stop] = self._make_coords(start, stop)
        return self._cache[start, stop]

    def _make_coords(self, start: int, stop: int) -> torch.Tensor:
        ranges = [torch.arange(n, dtype=torch.float64) for n in self.fine_shape]
        if self.slab_axis is not None:
            ranges[self.slab_axis] = torch.arange(start, stop, dtype=torch.float64)
        m = self._map
        g = (m[:3, 0, None, None, None] * ranges[0][:, None, None]
             + m[:3, 1, None, None, None] * ranges[1][None, :, None]
             + m[:3, 2, None, None, None] * ranges[2][None, None, :]
             + m[:3, 3, None, None, None])  # grid index of every fine point, (3, a, b, c)
        n = torch.as_tensor(self.grid.shape, dtype=torch.float64)
        norm = 2.0 * g / (n - 1).clamp(min=1)[:, None, None, None] - 1.0
        # grid_sample wants (x, y, z) = the input's last, middle, first axis
        return norm.flip(0).permute(1, 2, 3, 0)[None].to(self.dtype).contiguous()

    def _take(self, a: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if self.slab_axis is None:
            return a
        return a.narrow(self.slab_axis, start, stop - start)

    def _aligned(self) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]] | None:
        """When the fine points are grid voxels (axes swapped or flipped, whole-voxel
        offsets: a stack that was not moved, at the grid's spacing), ``W`` is a gather:
        ``(order, indices, inside)``, fine axis ``a`` reading grid axis ``order[a]`` at
        ``indices[a]`` (``inside[a]``: within the grid). Else ``None``."""
        m = self._map.numpy()
        order, indices, inside = [], [], []
        for a in range(3):
            col = m[:3, a]
            b = int(np.argmax(np.abs(col)))
            rest = np.delete(col, b)
            if abs(abs(col[b]) - 1) > 1e-9 or np.abs(rest).max() > 1e-9 \
                    or abs(m[b, 3] - round(m[b, 3])) > 1e-6 or b in order:
                return None
            idx = round(m[b, 3]) + int(np.sign(col[b])) * torch.arange(self.fine_shape[a])
            order.append(b)
            keep = (idx >= 0) & (idx < self.grid.shape[b])
            indices.append(idx.clamp(0, self.grid.shape[b] - 1))
            inside.append(keep.to(self.dtype))
        return order, indices, inside

    def _inside(self, axis: int) -> torch.Tensor:
        shape = [1, 1, 1]
        shape[axis] = -1
        return self._gather[2][axis].reshape(shape)

    # A and Aᵀ ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: the stack the grid volume ``x`` ``(X, Y, Z)`` predicts."""
        vol = x.to(self.dtype)[None, None]
        out = torch.empty(self.shape, dtype=self.dtype)
        for start, stop in self.slabs():
            if self._gather is not None:
                order, indices, _ = self._gather
                fine = vol[0, 0].permute(order)
                for axis in range(3):
                    fine = fine.index_select(axis, indices[axis]) * self._inside(axis)
            else:
                fine = torch.nn.functional.grid_sample(
                    vol, self._coords(start, stop), mode="bilinear", padding_mode="zeros",
                    align_corners=True)[0, 0]
            for axis, matrix in self._matrices.items():
                fine = _along(fine, axis, matrix)
            self._take(out, start, stop).copy_(fine)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``Aᵀ y``: a stack-shaped ``y`` spread back onto the grid."""
        like = torch.zeros((), dtype=self.dtype).expand(1, 1, *self.grid.shape)
        total = torch.zeros(self.grid.shape, dtype=self.dtype)
        y = y.to(self.dtype)
        for start, stop in self.slabs():
            fine = self._take(y, start, stop)
            for axis, matrix in self._matrices.items():
                fine = _along(fine, axis, matrix.T)
            if self._gather is not None:
                order, indices, _ = self._gather
                for axis in range(3):
                    fine = fine * self._inside(axis)
                    shape = list(fine.shape)
                    shape[axis] = self.grid.shape[order[axis]]
                    fine = torch.zeros(shape, dtype=self.dtype).index_add_(
                        axis, indices[axis], fine)
                total += fine.permute(np.argsort(order).tolist())
                continue
            grad, _ = torch.ops.aten.grid_sampler_3d_backward(
                fine[None, None].contiguous(), like, self._coords(start, stop), 0, 0, True,
                [True, False])
            total += grad[0, 0]
        return total

    @property
    def mask(self) -> torch.Tensor:
        """The stack voxels the grid sees whole (boolean, the stack's shape)."""
        if self._mask is None:
            self._mask = self.forward(torch.ones(self.grid.shape, dtype=self.dtype)) >= SEEN
        return self._mask
