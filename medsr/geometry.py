"""Voxel-grid geometry: spacings, LPS/RAS conversion and the upsampling convention.

Convention: upsampled voxels subdivide each source voxel. The physical extent of the volume is
kept, so along an axis upscaled by ``s`` the first voxel centre moves by half the difference
of the spacings, ``(d/s - d)/2``, in the direction of that axis. Output index ``j`` sits at
source index ``(j + 0.5) * r - 0.5`` with ``r = d_out / d_in``; this holds for any direction
matrix (oblique, flipped, sheared) because it is applied in index space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsr.errors import MedsrError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis (lengths of the affine's columns)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def plane_pixel(affine: np.ndarray, axis: int) -> float:
    """The finer voxel size of the other two axes: the pixel of the planes a through-plane
    network runs on when ``axis`` is upscaled (what :func:`medsr.models.default_model` routes
    by)."""
    size = spacing(affine)
    return float(min(size[a] for a in range(3) if a != axis))


def flip_lps_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a voxel-to-world affine between LPS (DICOM, ITK) and RAS (NIfTI, MONAI)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def index_map(ratio: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Output-to-source index map ``i = ratio * j + offset`` for the subdivision convention.

    ``ratio`` is output spacing over source spacing per axis (``1/s`` for a factor ``s``).
    """
    r = np.asarray(ratio, dtype=np.float64)
    return r, (r - 1.0) / 2.0


def resampled_affine(affine: np.ndarray, ratio: Sequence[float]) -> np.ndarray:
    """Affine of the grid with spacing ``ratio * spacing`` that covers the same extent."""
    r, offset = index_map(ratio)
    t = np.eye(4)
    t[:3, :3] = np.diag(r)
    t[:3, 3] = offset
    return np.asarray(affine, dtype=np.float64) @ t


def parse_factors(scale: Sequence[float]) -> tuple[int, int, int]:
    """Validate per-axis upscaling factors: three positive integers."""
    if len(scale) != 3:
        raise MedsrError(f"--scale needs three factors (one per array axis), got {len(scale)}")
    out = []
    for s in scale:
        if not float(s).is_integer() or s < 1:
            raise MedsrError(f"scale factors must be positive integers, got {list(scale)}")
        out.append(int(s))
    return out[0], out[1], out[2]


def parse_spacing(spacing: Sequence[float]) -> np.ndarray:
    """Validate a target spacing: three positive finite numbers (mm)."""
    t = np.asarray(spacing, dtype=np.float64)
    if t.shape != (3,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise MedsrError(f"--spacing needs three positive numbers, got {list(spacing)}")
    return t


def default_factors(spacings: Sequence[float]) -> tuple[int, int, int]:
    """Bring every spacing down to (near) the smallest one by an integer factor."""
    d = np.asarray(spacings, dtype=np.float64)
    f = np.maximum(1, np.round(d / d.min())).astype(int)
    return int(f[0]), int(f[1]), int(f[2])


def target_grid(shape: Sequence[int], affine: np.ndarray, *,
                scale: Sequence[float] | None = None,
                target_spacing: Sequence[float] | None = None
                ) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """Output shape, output affine and ratio (output/source spacing) for an upscaling request.

    With neither ``scale`` nor ``target_spacing``, :func:`default_factors` decides. With
    ``target_spacing`` the spacing is met exactly and the axis length is rounded, so the extent
    may differ from the source by under half an output voxel at each end.
    """
    if scale is not None and target_spacing is not None:
        raise MedsrError("give either --scale or --spacing, not both")
    shape = np.asarray(shape, dtype=np.int64)
    src = spacing(affine)
    if target_spacing is not None:
        ratio = parse_spacing(target_spacing) / src
        out_shape = np.maximum(1, np.round(shape / ratio)).astype(np.int64)
    else:
        factors = np.asarray(parse_factors(scale) if scale is not None
                             else default_factors(src), dtype=np.int64)
        ratio = 1.0 / factors
        out_shape = shape * factors
    out_affine = resampled_affine(affine, ratio)
    if target_spacing is not None:
        # centre the rounded grid on the source extent
        r, _ = index_map(ratio)
        shift = (shape - out_shape * r) / 2.0
        out_affine[:3, 3] += np.asarray(affine)[:3, :3] @ shift
    sx, sy, sz = (int(v) for v in out_shape)
    return (sx, sy, sz), out_affine, ratio
