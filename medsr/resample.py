"""Classical resampling onto an upscaled grid (cubic B-spline, linear) with SimpleITK.

The grids are related by an axis-aligned scaling in index space (see :mod:`medsr.geometry`),
so resampling is done there, independent of the direction matrix. SimpleITK's B-spline is a
true cubic B-spline interpolation (prefiltered, mirror boundary), multithreaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from medsr.errors import MedsrError

INTERPOLATORS = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear}


def resample_index_space(array: np.ndarray, out_shape: Sequence[int], ratio: Sequence[float],
                         offset: Sequence[float], method: str = "bspline",
                         progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Resample an ``(X, Y, Z)`` array so that output index ``j`` samples ``ratio*j + offset``.

    Args:
        array: source intensities.
        out_shape: output ``(X, Y, Z)``.
        ratio: source voxels per output voxel, per axis.
        offset: source index of output voxel 0, per axis.
        method: ``"bspline"`` or ``"linear"``.
        progress: called with the fraction done (0..1) while SimpleITK works.

    Returns:
        float32 array of ``out_shape``.
    """
    if method not in INTERPOLATORS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(INTERPOLATORS)}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0),
                                                        dtype=np.float32))
    f = sitk.ResampleImageFilter()
    f.SetInterpolator(INTERPOLATORS[method])
    f.SetSize([int(s) for s in out_shape])
    f.SetOutputSpacing([float(r) for r in ratio])
    f.SetOutputOrigin([float(o) for o in offset])
    f.SetOutputPixelType(sitk.sitkFloat32)
    f.SetDefaultPixelValue(0.0)
    if progress is not None:
        f.AddCommand(sitk.sitkProgressEvent, lambda: progress(f.GetProgress()))
    out = f.Execute(image)
    del image
    # one copy out of the ITK buffer, straight into (X, Y, Z) order
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(out).transpose(2, 1, 0))


def upsample_axis(array: np.ndarray, axis: int, factor: int, method: str = "bspline"
                  ) -> np.ndarray:
    """Interpolate ×``factor`` along one axis of an ``(X, Y, Z)`` array (voxel subdivision).

    The other axes are sampled at their own voxel centres, where both interpolators return
    the samples themselves, so a stack of 2D patches can be passed as one array. This is the
    input of networks that refine an interpolation, in training and in inference alike.
    """
    ratio = np.ones(3)
    ratio[axis] = 1.0 / factor
    shape = list(array.shape)
    shape[axis] *= factor
    return resample_index_space(array, shape, ratio, (ratio - 1.0) / 2.0, method)
