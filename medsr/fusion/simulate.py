"""Thick-slice stacks made from a thin-slice volume, the subject moved or not: what the tests
and ``benchmarks/fuse_eval.py`` fuse and compare with the truth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medsr.fusion.grid import Grid, centre_of, resample_onto


def rigid(degrees: Sequence[float], mm: Sequence[float], centre: Sequence[float]
          ) -> np.ndarray:
    """4×4 rotation about ``centre`` by ``degrees`` about x, y, z (in that order), then a
    shift by ``mm``."""
    rx, ry, rz = (math.radians(d) for d in degrees)
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))
    r = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
         @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
         @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    c = np.asarray(centre, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(mm, dtype=np.float64)
    return m


def thick_stack(volume: np.ndarray, affine: np.ndarray, axis: int, factor: int,
                motion: np.ndarray | None = None, profile: str = "box"
                ) -> tuple[np.ndarray, np.ndarray]:
    """A stack of ``factor``-thick slices across ``axis`` of ``volume``: ``(array, affine)``.

    The header (affine) is where the stack would be without motion; with ``motion`` (4×4 RAS,
    the stack's world -> the volume's world, :func:`rigid`) the subject sat moved, so the
    thin slices are the volume cubic-B-spline sampled at the moved points, then averaged
    across ``axis`` with ``profile`` (:func:`medsr.transforms.degrade.slice_profile`).
    """
    import torch

    from medsr.transforms.degrade import slice_profile

    n = list(volume.shape)
    n[axis] -= n[axis] % factor
    fine = np.asarray(volume, dtype=np.float32)[:n[0], :n[1], :n[2]]
    if motion is not None:
        fine = resample_onto(fine, affine, Grid(tuple(n), affine), np.linalg.inv(motion))
    lr = slice_profile(torch.from_numpy(np.ascontiguousarray(fine))[None], axis, factor,
                       profile=profile)[0].numpy()
    t = np.eye(4)
    t[axis, axis], t[axis, 3] = factor, (factor - 1) / 2
    return lr, np.asarray(affine, dtype=np.float64) @ t


__all__ = ["centre_of", "rigid", "thick_stack"]
