"""The scan's own in-plane truth for its thick axis, in NumPy.

A thick-slice scan's in-plane slices are high resolution: resampled along one in-plane axis to
the request's target spacing (:func:`inplane_truth`) and degraded there as the thick axis is,
they are pairs whose truth is known. Self-supervised SR (:mod:`medsr.selfsup`) learns from
them; the self-check (:mod:`medsr.selfcheck`) and the uncertainty calibration
(:mod:`medsr.uncertainty`) score a network on them, without loading torch.
"""

from __future__ import annotations

import numpy as np

from medsr.consistency import SliceProfile, along
from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size
from medsr.transforms.kernels import profile_kernel


def profile_variance(factor: int, profile: SliceProfile) -> float:
    """The slice profile's weights, squared and summed: how much of the in-plane noise a
    simulated thick slice keeps (its variance ratio)."""
    return float(np.sum(np.square(profile_kernel(factor, profile.width * factor,
                                                 profile.kind)[1])))


def resample_to_spacing(array: np.ndarray, axis: int, src: float, dst: float) -> np.ndarray:
    """Resample ``array`` along ``axis`` from spacing ``src`` to ``dst`` mm (same start edge).

    A coarser target averages the source voxels each target voxel covers (its box profile);
    a finer one interpolates linearly. Within 2 % the array is returned as it is.
    """
    if abs(dst / src - 1.0) < 0.02:
        return np.asarray(array, dtype=np.float32)
    n = array.shape[axis]
    m = max(1, int(np.floor(n * src / dst + 1e-6)))
    if dst > src:  # overlap of target [j, j+1)·dst with source [i, i+1)·src
        lo = np.arange(m)[:, None] * dst
        edges = np.arange(n)[None, :] * src
        w = np.clip(np.minimum(lo + dst, edges + src) - np.maximum(lo, edges), 0.0, None)
    else:
        pos = np.clip((np.arange(m) + 0.5) * dst / src - 0.5, 0.0, n - 1.0)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        w = np.zeros((m, n))
        np.add.at(w, (np.arange(m), i0), 1.0 - (pos - i0))
        np.add.at(w, (np.arange(m), i1), pos - i0)
    w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    return along(array, axis, w)


def inplane_truth(array: np.ndarray, affine: np.ndarray, axis: int, factor: int
                  ) -> list[tuple[int, list[int], np.ndarray]]:
    """The scan's in-plane truth for a through-plane request: ``(a, plane axes, volume)`` per
    high-resolution axis ``a``, the volume resampled along ``a`` to the target spacing
    ``d[axis] / factor`` (cropped to whole LR voxels), so that degrading it ×``factor`` along
    ``a`` mimics the thick axis in voxel units."""
    d = voxel_size(affine)
    inplane = [a for a in range(3) if a != axis]
    if not all(d[a] <= 1.5 * min(d[b] for b in inplane) for a in inplane) \
            or max(d[a] for a in inplane) > 0.9 * d[axis]:
        raise MedsrError("self-supervised SR needs a high-resolution plane: the two axes other "
                         f"than the thick axis {axis} have spacings of "
                         f"{' and '.join(f'{float(d[a]):.3g}' for a in inplane)} mm")
    target = float(d[axis]) / factor
    views = []
    for a in inplane:
        v = resample_to_spacing(array, a, float(d[a]), target)
        keep = (v.shape[a] // factor) * factor
        if keep < 4 * factor:
            raise MedsrError(f"axis {a} is too short ({array.shape[a]} voxels) to learn ×{factor}")
        index = [slice(None)] * 3
        index[a] = slice(0, keep)
        views.append((a, inplane, np.ascontiguousarray(v[tuple(index)])))
    return views
