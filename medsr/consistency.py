"""Data consistency: make an upscaled volume reproduce the measured slices it came from.

The acquisition along the thick axis is linear: LR slice ``k`` is the slice profile (box or
Gaussian, see :func:`medsr.transforms.degrade.profile_kernel`) of the fine volume around HR
index ``k*f + (f-1)/2``. Written as a matrix ``D`` (``n × f·n``) along that axis, consistency
means ``D @ out == lr`` column by column. The correction is the smoothest one that restores it:
the residual ``lr - D @ out`` is mapped back through the cubic B-spline upsampler ``B`` after
solving ``(D B) c = r`` (Tikhonov-damped), i.e. ``out += K (lr - D out)`` with
``K = B (MᵀM + λI)⁻¹ Mᵀ``, ``M = D B``. Unlike a per-block constant shift this leaves no block
edges; unlike iterative back-projection it is exact in one pass. Everything acts along one
axis with small ``n × n`` matrices, so it runs slab by slab in bounded memory.

Several upscaled axes (in-plane SR, or every axis at once) are one separable operator
``D = D_a ⊗ D_b ⊗ …`` with ``K = K_a ⊗ K_b ⊗ …``; since ``D_a K_a = I`` on each axis,
``D K = I`` and the one-pass projection stays exact (:func:`project_axes`). In-plane, MRI's
operator is k-space truncation (the ``"sinc"`` profile: the central ``1/f`` of k-space, sampled
at the LR voxel centres, :func:`medsr.transforms.degrade.kspace_truncate`), CT's a pixel box.

On a noisy scan the projection fits within the noise rather than reproducing it: only a share
(``gain``) of the residual is corrected, the Wiener share for the scan's measured noise
(:mod:`medsr.noise`), so the output re-degrades to the input within the noise.

Hand-written because MONAI/SimpleITK offer no data-consistency projection for an arbitrary
slice profile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class SliceProfile:
    """An axis's acquisition profile: shape (``box``, ``gaussian``, or ``sinc`` for k-space
    truncation) and FWHM in units of the LR spacing (``sinc``: always the spacing)."""

    kind: str = "box"
    width: float = 1.0

    def describe(self) -> str:
        if self.kind == "sinc":
            return "sinc (k-space truncation)"
        return f"{self.kind}, FWHM {self.width:.2f}× the slice spacing"


#: one upscaled axis: ``(axis, factor, profile)``
Operator = tuple[int, int, SliceProfile]


@lru_cache(maxsize=32)
def degrade_matrix(n_lr: int, factor: int, profile: SliceProfile) -> np.ndarray:
    """``D`` (``n_lr × factor·n_lr``): thick slices from a fine grid (replicate boundary;
    periodic for ``sinc``, as k-space is)."""
    from medsr.transforms.kernels import profile_kernel

    n_hr = n_lr * factor
    if profile.kind == "sinc":  # MR's in-plane operator: torch's FFT, as training degrades
        import torch

        from medsr.transforms.degrade import kspace_truncate

        eye = torch.eye(n_hr, dtype=torch.float64)[None]  # impulses along axis 1
        return kspace_truncate(eye, 1, factor)[0].T.numpy().copy()
    offsets, weights = profile_kernel(factor, profile.width * factor, profile.kind)
    d = np.zeros((n_lr, n_hr))
    for k in range(n_lr):
        idx = np.clip(np.round(k * factor + (factor - 1) / 2 + offsets).astype(int), 0, n_hr - 1)
        np.add.at(d[k], idx, weights)
    return d


@lru_cache(maxsize=32)
def upsample_matrix(n_lr: int, factor: int) -> np.ndarray:
    """``B`` (``factor·n_lr × n_lr``): cubic B-spline subdivision of a column (as medsr's
    B-spline upscaling does it)."""
    from medsr.resample import upsample_axis

    eye = np.repeat(np.eye(n_lr, dtype=np.float32)[:, :, None], 2, axis=2)
    return upsample_axis(eye, 0, factor, "bspline")[:, :, 0].astype(np.float64)


@lru_cache(maxsize=32)
def correction_matrix(n_lr: int, factor: int, profile: SliceProfile,
                      damping: float = 1e-6) -> np.ndarray:
    """``K`` (``factor·n_lr × n_lr``) of the consistency projection (see module doc)."""
    d, b = degrade_matrix(n_lr, factor, profile), upsample_matrix(n_lr, factor)
    m = d @ b
    return b @ np.linalg.solve(m.T @ m + damping * np.eye(n_lr), m.T)


#: multiply-adds per BLAS product in :func:`along`: at most this, OpenBLAS runs a product on
#: the calling thread (``SMP_THRESHOLD_MIN × GEMM_MULTITHREAD_THRESHOLD``). Its worker threads
#: spin between products, and on 2 busy cores they took 2-3 s of a 14 s run (docs/speed.md)
SMALL_PRODUCT = 65536 * 4


def along(x: np.ndarray, axis: int, matrix: np.ndarray) -> np.ndarray:
    """Apply ``matrix`` (out × in) along ``axis`` of ``x``: a new C-contiguous float32 array.

    As many small products as it takes (:data:`SMALL_PRODUCT`, at least 16 rows each), each
    on this thread: no BLAS thread barrier, which costs more than the work on a loaded
    machine (as :mod:`medsr.resample`'s single-threaded operations avoid too). A matrix too
    large for 16 rows (an in-plane resampling) is one product."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    mt = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32).T)  # (in, out)
    n, k = mt.shape
    last = axis in (-1, x.ndim - 1)
    moved = x if last else np.ascontiguousarray(np.moveaxis(x, axis, -1))
    rows = moved.reshape(-1, n)
    out = np.empty((rows.shape[0], k), dtype=np.float32)
    step = SMALL_PRODUCT // (n * k)
    step = step if step >= 16 else rows.shape[0]
    whole = rows.shape[0] // step * step
    if whole:
        np.matmul(rows[:whole].reshape(-1, step, n), mt, out=out[:whole].reshape(-1, step, k))
    if whole < rows.shape[0]:
        np.matmul(rows[whole:], mt, out=out[whole:])
    out = out.reshape(*moved.shape[:-1], k)
    return out if last else np.ascontiguousarray(np.moveaxis(out, -1, axis))


def degrade(out: np.ndarray, axis: int, factor: int, profile: SliceProfile) -> np.ndarray:
    """The thick slices that ``out`` predicts (``D @ out`` along ``axis``)."""
    n_lr = out.shape[axis] // factor
    return along(out, axis, degrade_matrix(n_lr, factor, profile))


def _target(out: np.ndarray, in_place: bool) -> np.ndarray:
    """``out`` itself when it may be corrected in place, else a float32 copy."""
    if in_place and out.dtype == np.float32 and out.flags.writeable:
        return out
    return np.array(out, dtype=np.float32)


def project(out: np.ndarray, lr: np.ndarray, axis: int, factor: int,
            profile: SliceProfile, *, in_place: bool = False, gain: float = 1.0) -> np.ndarray:
    """``out`` corrected so that, degraded again with ``profile``, it reproduces ``lr``.

    Args:
        out: the upscaled volume, ``factor`` times longer than ``lr`` along ``axis``.
        lr: the measured volume (same units).
        axis: the upscaled axis; the other axes must match.
        factor: the upscaling factor.
        profile: the slice profile of the measured slices.

        in_place: correct ``out`` itself (a float32 array) instead of a copy.
        gain: the share of the residual ``lr - D out`` to correct: 1 reproduces ``lr``
            exactly; below 1 (:func:`medsr.noise.noise_gain`) fits it within its noise.

    Returns:
        The corrected float32 array: a new one, or ``out`` with ``in_place``.
    """
    n_lr = lr.shape[axis]
    if out.shape[axis] != n_lr * factor:
        raise ValueError(f"output length {out.shape[axis]} is not {factor}×{n_lr}")
    x = _target(out, in_place)
    residual = np.asarray(lr, dtype=np.float32) - degrade(x, axis, factor, profile)
    if gain != 1.0:
        residual *= np.float32(gain)
    x += along(residual, axis, correction_matrix(n_lr, factor, profile))
    return x


def degrade_axes(out: np.ndarray, ops: Sequence[Operator]) -> np.ndarray:
    """What ``out`` predicts of the measured volume: ``D`` along every upscaled axis."""
    x = np.ascontiguousarray(out, dtype=np.float32)
    for axis, factor, profile in ops:
        x = along(x, axis, degrade_matrix(x.shape[axis] // factor, factor, profile))
    return x


def project_axes(out: np.ndarray, lr: np.ndarray, ops: Sequence[Operator], *,
                 in_place: bool = False, gain: float = 1.0) -> np.ndarray:
    """:func:`project` for several upscaled axes at once (the separable operator of ``ops``):
    ``out += K (lr - D out)`` with ``D``, ``K`` the Kronecker products of the axes' own."""
    if len(ops) == 1:
        return project(out, lr, *ops[0], in_place=in_place, gain=gain)
    for axis, factor, _ in ops:
        if out.shape[axis] != lr.shape[axis] * factor:
            raise ValueError(f"output length {out.shape[axis]} is not {factor}×"
                             f"{lr.shape[axis]} along axis {axis}")
    x = _target(out, in_place)
    residual = np.asarray(lr, dtype=np.float32) - degrade_axes(x, ops)
    if gain != 1.0:
        residual *= np.float32(gain)
    for axis, factor, profile in ops:
        residual = along(residual, axis, correction_matrix(lr.shape[axis], factor, profile))
    x += residual
    return x


def noise_variance_ratio(lr_shape: Sequence[int], ops: Sequence[Operator]) -> float:
    """The noise variance of a simulated measurement (``ops`` applied to a volume with white
    noise) over the volume's: the mean squared row norm of ``D`` on each axis, multiplied."""
    ratio = 1.0
    for axis, factor, profile in ops:
        d = degrade_matrix(int(lr_shape[axis]), factor, profile)
        ratio *= float(np.mean(np.sum(np.square(d), axis=1)))
    return ratio


def bspline_axes(lr: np.ndarray, ops: Sequence[Operator]) -> np.ndarray:
    """The cubic B-spline of ``lr`` on the grid of ``ops`` (every upscaled axis), float32."""
    from medsr.resample import upsample_axis

    out = np.asarray(lr, dtype=np.float32)
    for axis, factor, _ in ops:
        out = upsample_axis(out, axis, factor, "bspline")
    return out if out is not lr else out.copy()


def redegradation_psnr(out: np.ndarray, lr: np.ndarray, axis: int, factor: int,
                       profile: SliceProfile, data_range: float | None = None) -> float:
    """PSNR (dB) of the re-degraded output against the measured slices (inf when exact)."""
    lr = np.asarray(lr, dtype=np.float32)
    rng = float(data_range if data_range is not None else lr.max() - lr.min()) or 1.0
    mse = float(np.mean((degrade(out, axis, factor, profile) - lr) ** 2, dtype=np.float64))
    return math.inf if mse == 0 else 10.0 * math.log10(rng * rng / mse)
