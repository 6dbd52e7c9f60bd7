"""What a report shows, sampled from the arrays: the input on the output grid (nearest
neighbour and cubic B-spline), the slices to show, and a through-plane profile across an edge.

Any pair of volumes works (not only an output of medsr on its subdivision grid): output voxel
centres are mapped to the input through both affines and sampled there with SimpleITK.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: input slices shown on each side of the edge in the profile plot
PROFILE_HALF_WIDTH = 5


def sample_input(frame: np.ndarray, affine: np.ndarray, out_affine: np.ndarray,
                 start: Sequence[int], size: Sequence[int], method: str = "bspline"
                 ) -> np.ndarray:
    """The input ``frame`` ``(X, Y, Z)`` sampled at the output voxels ``start + [0, size)``.

    Args:
        frame: the input volume, scan units; ``affine``: its RAS affine.
        out_affine: RAS affine of the output grid.
        start, size: the block of output indices to fill (e.g. one plane or one line).
        method: ``"nearest"`` (the thick slices as they are) or ``"bspline"`` (cubic).
            Outside the input: 0.
    """
    import SimpleITK as sitk

    from medsr.io.itk import image_from_array

    shift = np.eye(4)
    shift[:3, 3] = np.asarray(start, dtype=np.float64)
    grid = image_from_array(np.zeros(tuple(int(s) for s in size), np.float32),
                            np.asarray(out_affine, dtype=np.float64) @ shift)
    source = image_from_array(np.asarray(frame, dtype=np.float32), affine)
    kind = {"nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[method]
    image = sitk.Resample(source, grid, sitk.Transform(), kind, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def input_plane(frame: np.ndarray, affine: np.ndarray, out_affine: np.ndarray,
                out_shape: Sequence[int], axis: int, index: int, method: str) -> np.ndarray:
    """The input sampled on plane ``index`` of ``axis`` of the output grid, as a 3D block
    with that axis of length 1."""
    start, size = [0, 0, 0], list(out_shape)
    start[axis], size[axis] = index, 1
    return sample_input(frame, affine, out_affine, start, size, method)


def largest_slice(sd: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the slice with the largest mean of ``sd``."""
    others = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(np.mean(sd, axis=others, dtype=np.float64)))


@dataclass
class Profile:
    """A line of the output grid across the strongest through-plane edge.

    Attributes:
        axis: the output axis the line runs along (nearest the input's thick axis).
        index: output index of the line's voxel at the edge ``(i, j, k)``.
        positions: mm along the line of the output voxels shown.
        output, bspline: values there (output; input by cubic B-spline).
        input_positions, input_values: the measured input samples near the line.
        start, stop: output indices along ``axis`` shown.
    """

    axis: int
    index: tuple[int, int, int]
    positions: np.ndarray
    output: np.ndarray
    bspline: np.ndarray
    input_positions: np.ndarray
    input_values: np.ndarray
    start: int
    stop: int


def _box3(a: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """3×3 box mean over two axes (edges repeated)."""
    out = np.asarray(a, dtype=np.float32)
    for ax in axes:
        pad = [(0, 0)] * out.ndim
        pad[ax] = (1, 1)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[ax]
        out = (np.take(p, range(n), ax) + np.take(p, range(1, n + 1), ax)
               + np.take(p, range(2, n + 2), ax)) / 3
    return out


def edge_profile(frame: np.ndarray, affine: np.ndarray, output: np.ndarray,
                 out_affine: np.ndarray) -> Profile | None:
    """The profile across the input's strongest edge along its thickest axis (``None`` when
    that axis has fewer than 2 slices)."""
    affine, out_affine = (np.asarray(m, dtype=np.float64) for m in (affine, out_affine))
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    thick = int(np.argmax(zooms))
    n = frame.shape[thick]
    if n < 2:
        return None
    plane_axes = tuple(a for a in range(3) if a != thick)
    smooth = _box3(frame, plane_axes)
    step = np.abs(np.diff(smooth, axis=thick))
    margin = [max(1, frame.shape[a] // 10) if a != thick else 0 for a in range(3)]
    inner = tuple(slice(m, s - m if m else None) for m, s in zip(margin, step.shape))
    at = np.unravel_index(int(np.argmax(step[inner])), step[inner].shape)
    edge = np.asarray([at[a] + margin[a] for a in range(3)], dtype=np.float64)
    edge[thick] += 0.5  # between the two slices
    world = affine[:3, :3] @ edge + affine[:3, 3]
    to_out = np.linalg.inv(out_affine)
    centre = to_out[:3, :3] @ world + to_out[:3, 3]
    direction = affine[:3, thick] / zooms[thick]
    out_dirs = out_affine[:3, :3] / np.linalg.norm(out_affine[:3, :3], axis=0)
    axis = int(np.argmax(np.abs(direction @ out_dirs)))
    index = tuple(int(np.clip(round(c), 0, s - 1)) for c, s in zip(centre, output.shape))
    per_slice = zooms[thick] / np.linalg.norm(out_affine[:3, axis])
    half = int(np.ceil(PROFILE_HALF_WIDTH * per_slice))
    start = max(0, index[axis] - half)
    stop = min(output.shape[axis], index[axis] + half + 1)
    line_start, size = list(index), [1, 1, 1]
    line_start[axis], size[axis] = start, stop - start
    take = tuple(slice(s, s + z) for s, z in zip(line_start, size))
    unit = out_dirs[:, axis]
    origin = out_affine[:3, 3]  # positions: mm from the output grid's first voxel
    idx = np.zeros((3, stop - start))
    idx[:, :] = np.asarray(index, dtype=np.float64)[:, None]
    idx[axis] = np.arange(start, stop)
    positions = (out_affine[:3, :3] @ idx + out_affine[:3, 3:4] - origin[:, None]).T @ unit
    # the measured samples: the input column nearest the line, over the slices shown
    col = [int(np.clip(round(e), 0, s - 1)) for e, s in zip(edge, frame.shape)]
    lo = max(0, int(edge[thick]) - PROFILE_HALF_WIDTH + 1)
    hi = min(n, int(edge[thick]) + PROFILE_HALF_WIDTH + 1)
    in_idx = np.zeros((3, hi - lo))
    in_idx[:, :] = np.asarray(col, dtype=np.float64)[:, None]
    in_idx[thick] = np.arange(lo, hi)
    in_world = affine[:3, :3] @ in_idx + affine[:3, 3:4]
    in_positions = (in_world - origin[:, None]).T @ unit
    values = np.take(frame[tuple(c if a != thick else slice(None) for a, c in enumerate(col))],
                     range(lo, hi))
    bspline = sample_input(frame, affine, out_affine, line_start, size, "bspline")
    return Profile(axis, index, positions, np.asarray(output[take], np.float32).ravel(),
                   bspline.ravel(), in_positions, np.asarray(values, np.float32), start, stop)
