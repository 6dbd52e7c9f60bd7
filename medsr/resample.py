"""Classical resampling onto an upscaled grid (cubic B-spline, linear).

The grids are related by an axis-aligned scaling in index space (see :mod:`medsr.geometry`),
so resampling is done there, independent of the direction matrix.

Two implementations give the same values (within float32 round-off):

* :func:`resample_axis`, used whenever a single axis is resampled (the usual thick-slice
  case): a separable 1D cubic B-spline (mirror-boundary prefilter, then 4 taps per output
  sample) or linear interpolation (2 taps), vectorised with numpy and run slab by slab along
  another axis, so the peak memory is input + output + a few MB, and it can write straight
  into a preallocated array or memmap (``out=``). It is hand-written because SimpleITK has no
  one-axis path: its 3D B-spline evaluates 4³ = 64 coefficients per output voxel and holds a
  float64 coefficient image plus its own output buffer, which is 10-20× slower and ~3× the
  memory for a 512×512×120 → ×5 CT.
* SimpleITK's ``ResampleImageFilter`` (``sitkBSpline``: a true cubic B-spline, mirror
  boundary; ``sitkLinear``) for everything else (several axes, general offsets).

Boundary behaviour (matched to ITK): the B-spline coefficients use the mirror
(whole-sample symmetric) extension, taps beyond the ends read mirrored coefficients, linear
taps are clamped to the end samples. Output points up to half a source voxel outside the
sampled range (``-0.5 <= i < n - 0.5``, the subdivision grid's first and last points) are
interpolated that way; points further out get 0, as ITK's default pixel value. One
deliberate difference: on a two-sample axis ITK's single mirror reflection reads past its
coefficient buffer for points at or beyond the last sample (garbage values); the one-axis path
uses the true mirror (period ``2n - 2``) there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medsr.errors import MedsrError

#: interpolation methods; SimpleITK (imported when the general path runs) names them
INTERPOLATORS = ("bspline", "linear")

#: pole of the cubic B-spline prefilter, sqrt(3) - 2
_POLE = float(np.sqrt(3.0) - 2.0)
#: a non-resampled axis must map output index j to source index j within this
_IDENTITY_TOL = 1e-9
#: working-set budget of one slab's float32 lines, and of one sub-slab's output and
#: temporaries: cache-sized (1-4 MiB ran fastest on 512×512×120 → ×5, 8+ MiB slower)
SLAB_BYTES = 4 * 2**20


def resample_index_space(array: np.ndarray, out_shape: Sequence[int], ratio: Sequence[float],
                         offset: Sequence[float], method: str = "bspline",
                         progress: Callable[[float], None] | None = None, *,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Resample an ``(X, Y, Z)`` array so that output index ``j`` samples ``ratio*j + offset``.

    When at most one axis is resampled (ratio 1 and offset 0 on the others) the fast
    one-axis path :func:`resample_axis` runs; otherwise SimpleITK.

    Args:
        array: source intensities (any real dtype, any memory layout, a memmap is fine).
        out_shape: output ``(X, Y, Z)``.
        ratio: source voxels per output voxel, per axis.
        offset: source index of output voxel 0, per axis.
        method: ``"bspline"`` or ``"linear"``.
        progress: called with the fraction done (0..1) while it works.
        out: optional preallocated float32 array (or memmap) of ``out_shape`` to write into.

    Returns:
        float32 array of ``out_shape`` (``out`` itself when given).
    """
    if method not in INTERPOLATORS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(INTERPOLATORS)}")
    out_shape = tuple(int(s) for s in out_shape)
    _check_out(out, out_shape)
    axis = resampled_axis(array.shape, out_shape, ratio, offset)
    if axis is not None:
        return resample_axis(array, axis, out_shape[axis], float(ratio[axis]),
                             float(offset[axis]), method, out=out, progress=progress)
    result = resample_sitk(array, out_shape, ratio, offset, method, progress)
    if out is None:
        return result
    out[...] = result
    return out


def resampled_axis(in_shape: Sequence[int], out_shape: Sequence[int], ratio: Sequence[float],
                   offset: Sequence[float]) -> int | None:
    """The one axis a request resamples (0 when none does), or None when several are."""
    moved = [a for a in range(3)
             if not (int(in_shape[a]) == int(out_shape[a])
                     and abs(float(ratio[a]) - 1.0) <= _IDENTITY_TOL
                     and abs(float(offset[a])) <= _IDENTITY_TOL)]
    if len(moved) > 1:
        return None
    return moved[0] if moved else 0


def upsample_axis(array: np.ndarray, axis: int, factor: int, method: str = "bspline", *,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Interpolate ×``factor`` along one axis of an ``(X, Y, Z)`` array (voxel subdivision).

    The other axes are untouched, so a stack of 2D patches can be passed as one array. This
    is the input of networks that refine an interpolation, in training and in inference
    alike. Same values as :func:`resample_index_space` with the subdivision grid.
    """
    ratio = 1.0 / factor
    return resample_axis(array, axis, array.shape[axis] * factor, ratio, (ratio - 1.0) / 2.0,
                         method, out=out)


def resample_axis(array: np.ndarray, axis: int, n_out: int, ratio: float, offset: float,
                  method: str = "bspline", *, out: np.ndarray | None = None,
                  slab_bytes: int = SLAB_BYTES, threads: int | None = None,
                  progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Resample one axis: output index ``j`` along ``axis`` samples ``ratio*j + offset``.

    Works slab by slab along another axis: each slab is converted to float32 lines along
    ``axis``, prefiltered (B-spline), evaluated with 4 (or 2) taps per output sample and
    written into ``out``. Slabs run concurrently on worker threads (numpy releases the GIL);
    each operation is single-threaded, so there are no per-operation thread barriers, which
    cost far more than the work on a loaded machine. Every output value is computed by the
    same float operations whatever the slab size or thread count, so slab-wise and
    whole-volume results are bitwise equal.

    Args:
        array: source ``(X, Y, Z)`` (any real dtype, memmap fine; read slab by slab).
        axis: the axis to resample.
        n_out: output length along ``axis``.
        ratio: source voxels per output voxel along ``axis``.
        offset: source index of output sample 0 along ``axis``.
        method: ``"bspline"`` (cubic) or ``"linear"``.
        out: optional preallocated float32 array (or memmap) of the output shape.
        slab_bytes: working-set budget of one slab.
        threads: worker threads (slabs run concurrently); default :func:`thread_budget`.
        progress: called with the fraction done after each slab.

    Returns:
        float32 array (``out`` itself when given).
    """
    if method not in INTERPOLATORS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(INTERPOLATORS)}")
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    n = int(array.shape[axis])
    out_shape = list(array.shape)
    out_shape[axis] = int(n_out)
    out_shape = tuple(out_shape)
    _check_out(out, out_shape)
    if out is None:
        out = np.empty(out_shape, dtype=np.float32)
    if out.size == 0 or array.size == 0:
        if out.size:
            out[...] = 0.0
        return out
    index, weight = tap_weights(n, int(n_out), ratio, offset, method)
    weight = [w.astype(np.float32)[:, None] for w in weight]

    # slabs along the outermost other axis (contiguous chunks of a C-ordered output/memmap);
    # each slab's float32 lines take about slab_bytes, and they are evaluated in sub-slabs
    # whose output and temporaries take about as much
    slab_axis = 1 if axis == 0 else 0
    length = int(array.shape[slab_axis])
    columns = int(np.prod(array.shape)) // (n * length)  # lines per index along slab_axis
    in_step = int(np.clip(slab_bytes // (4 * n * columns), 1, length))
    out_step = int(np.clip(slab_bytes // (12 * int(n_out) * columns), 1, in_step))

    def run_slab(start: int) -> int:
        stop = min(length, start + in_step)
        block = np.moveaxis(np.asarray(array[_along(slab_axis, start, stop)]), axis, 0)
        lines = np.empty(block.shape, dtype=np.float32)
        lines[...] = block
        lines = lines.reshape(n, -1)
        del block
        if method == "bspline":
            _prefilter(lines)
        for sub in range(start, stop, out_step):
            sub_stop = min(stop, sub + out_step)
            cols = lines[:, (sub - start) * columns:(sub_stop - start) * columns]
            target = np.moveaxis(out[_along(slab_axis, sub, sub_stop)], axis, 0)
            target[...] = _evaluate(cols, index, weight).reshape(target.shape)
        return stop

    starts = range(0, length, in_step)
    workers = min(len(starts), threads or thread_budget())
    if workers <= 1:
        done = map(run_slab, starts)
    else:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="medsr-resample")
        done = pool.map(run_slab, starts)
    try:
        for stop in done:
            if progress is not None:
                progress(stop / length)
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    return out


def tap_weights(n: int, n_out: int, ratio: float, offset: float, method: str = "bspline"
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Source indices and weights of each tap for output samples ``ratio*j + offset``.

    Returns one ``(n_out,)`` index array and one weight array per tap (4 for the cubic
    B-spline, applied to its coefficients; 2 for linear, applied to the samples). Indices
    beyond the ends are mirrored (B-spline) or clamped (linear); samples outside
    ``[-0.5, n - 0.5)`` get weight 0, like ITK's default pixel value.
    """
    x = float(ratio) * np.arange(n_out, dtype=np.float64) + float(offset)
    inside = (x >= -0.5) & (x < n - 0.5)
    x = np.where(inside, x, 0.0)
    base = np.floor(x)
    t = x - base
    base = base.astype(np.int64)
    if method == "bspline":
        u = 1.0 - t
        weights = [u**3 / 6.0, (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0,
                   (1.0 + 3.0 * t + 3.0 * t**2 - 3.0 * t**3) / 6.0, t**3 / 6.0]
        indices = [_mirror(base + k, n) for k in (-1, 0, 1, 2)]
    elif method == "linear":
        weights = [1.0 - t, t]
        indices = [np.clip(base + k, 0, n - 1) for k in (0, 1)]
    else:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(INTERPOLATORS)}")
    return indices, [np.where(inside, w, 0.0) for w in weights]


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Whole-sample mirror of indices into ``[0, n)`` (period ``2n - 2``)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * n - 2
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def _prefilter(c: np.ndarray) -> None:
    """Cubic B-spline interpolation coefficients of each column of ``c`` ``(n, m)``, in place.

    The causal/anti-causal recursion with pole ``sqrt(3) - 2`` and the exact mirror
    initialisation (Unser 1993). Only elementwise float32 ops on whole rows, so every column
    gets the same operations whatever ``m`` is.
    """
    n = c.shape[0]
    if n == 1:
        return
    z = np.float32(_POLE)
    c *= np.float32(6.0)  # (1 - z) * (1 - 1/z)
    # causal initial value: sum of z^k over the mirror-extended column (period 2n - 2)
    period = 2 * n - 2
    k = np.arange(n, dtype=np.float64)
    v = _POLE**k + np.where((k > 0) & (k < n - 1), _POLE ** (period - k), 0.0)
    v = (v / (1.0 - _POLE**period)).astype(np.float32)
    keep = [int(i) for i in np.nonzero(np.abs(v) > 1e-12)[0]]
    row = np.empty_like(c[0])
    first = c[keep[0]] * v[keep[0]]
    for i in keep[1:]:
        first += np.multiply(c[i], v[i], out=row)
    c[0] = first
    for i in range(1, n):
        c[i] += np.multiply(c[i - 1], z, out=row)
    c[n - 1] += np.multiply(c[n - 2], z, out=row)
    c[n - 1] *= np.float32(_POLE / (_POLE * _POLE - 1.0))
    for i in range(n - 2, -1, -1):
        np.subtract(c[i + 1], c[i], out=row)
        np.multiply(row, z, out=c[i])


def _evaluate(c: np.ndarray, index: list[np.ndarray], weight: list[np.ndarray]) -> np.ndarray:
    """``sum_k weight[k] * c[index[k]]`` row-wise: ``(n_out, m)`` from ``c`` ``(n, m)``."""
    acc = np.take(c, index[0], axis=0)
    acc *= weight[0]
    tmp = np.empty_like(acc)
    for i, w in zip(index[1:], weight[1:], strict=True):
        np.take(c, i, axis=0, out=tmp)
        tmp *= w
        acc += tmp
    return acc


def thread_budget() -> int:
    """Worker threads of the one-axis path: the CPUs this process may run on, and no more
    than torch's thread setting when torch is loaded (so ``torch.set_num_threads(1)`` in a
    batch worker keeps this path on one thread too)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    torch = sys.modules.get("torch")
    if torch is not None:
        cpus = min(cpus, int(torch.get_num_threads()))
    return max(1, cpus)


def _along(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    """Index selecting ``start:stop`` along ``axis`` of a 3D array."""
    sel = [slice(None)] * 3
    sel[axis] = slice(start, stop)
    return tuple(sel)


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if out is not None and (tuple(out.shape) != tuple(shape) or out.dtype != np.float32):
        raise ValueError(f"out must be a float32 array of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")


def resample_sitk(array: np.ndarray, out_shape: Sequence[int], ratio: Sequence[float],
                   offset: Sequence[float], method: str,
                   progress: Callable[[float], None] | None) -> np.ndarray:
    """The general case with SimpleITK's ``ResampleImageFilter`` (several axes at once)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0),
                                                        dtype=np.float32))
    f = sitk.ResampleImageFilter()
    f.SetInterpolator({"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear}[method])
    f.SetSize([int(s) for s in out_shape])
    f.SetOutputSpacing([float(r) for r in ratio])
    f.SetOutputOrigin([float(o) for o in offset])
    f.SetOutputPixelType(sitk.sitkFloat32)
    f.SetDefaultPixelValue(0.0)
    if progress is not None:
        f.AddCommand(sitk.sitkProgressEvent, lambda: progress(f.GetProgress()))
    result = f.Execute(image)
    del image
    # one copy out of the ITK buffer, straight into (X, Y, Z) order
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(result).transpose(2, 1, 0))
