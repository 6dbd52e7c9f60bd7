"""CT padding: the voxels outside the reconstruction circle, which scanners store far below air.

A CT slice is reconstructed inside a circle; the corners outside it hold a padding value
(PixelPaddingValue, commonly -2000 or -3024 HU once rescaled), not a measurement. Networks
trained on air at -1024 HU meet a cliff there and ring along the circle. For learned methods
medsr reads such voxels as air, upscales, and puts each output voxel whose input voxel was
padding back to that padding value, so the output's corners are what the input's were.
Padding is what lies below any tissue, air or noise (-1200 HU) and reaches the volume's faces.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: no tissue, air or noise in HU lies below this; scanners pad with -2000, -2048, -3024, ...
PADDING_BELOW_HU = -1200.0
AIR_HU = -1024.0


def padding_mask(frames: np.ndarray, modality: str) -> np.ndarray | None:
    """The padding of CT ``frames`` ``(T, X, Y, Z)``, or ``None`` when there is none: voxels
    below ``PADDING_BELOW_HU`` connected to the volume's faces. The outside of the
    reconstruction circle reaches the image's edges; a dark streak inside the body (metal)
    does not, and is left to the network."""
    if modality != "CT" or not np.any(frames < PADDING_BELOW_HU):
        return None
    import SimpleITK as sitk  # a flood fill from a frame put around the volume

    mask = np.zeros(frames.shape, dtype=bool)
    for t, frame in enumerate(frames):
        framed = np.pad(np.asarray(frame, dtype=np.float32), 1,
                        constant_values=PADDING_BELOW_HU - 1.0)
        region = sitk.ConnectedThreshold(sitk.GetImageFromArray(framed), seedList=[(0, 0, 0)],
                                         lower=float(framed.min()), upper=PADDING_BELOW_HU)
        mask[t] = sitk.GetArrayViewFromImage(region)[1:-1, 1:-1, 1:-1] > 0
    return mask if mask.any() else None


def fill_padding(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``frames`` with its padding read as air (``AIR_HU``)."""
    filled = np.array(frames, dtype=np.float32, copy=True)
    filled[mask] = AIR_HU
    logger.info("CT padding outside the reconstruction circle: %d voxels (%.1f %%) read as "
                "air, restored in the output", int(mask.sum()), 100.0 * float(mask.mean()))
    return filled


def restore_padding(out: np.ndarray, frames: np.ndarray, mask: np.ndarray,
                    sd: np.ndarray | None = None, chunk: int = 16) -> bool:
    """Put the padding back in place: every output voxel of ``out`` ``(T, X', Y', Z')`` whose
    input voxel (``X' = f·X``: voxel ``i`` lies in input voxel ``i // f``) was padding gets that
    voxel's input value, and 0 in ``sd``. In place, a few output slices at a time (``out``
    may be a disk-backed array). Returns False, changing nothing, when the output grid is not
    a whole multiple of the input's."""
    shape, out_shape = np.array(frames.shape[1:]), np.array(out.shape[1:])
    if np.any(out_shape % shape):
        logger.info("padding not restored: the output grid %s is not a whole multiple of %s",
                    tuple(out_shape), tuple(shape))
        return False
    f = out_shape // shape
    ix, iy = np.arange(out_shape[0]) // f[0], np.arange(out_shape[1]) // f[1]
    for t in range(out.shape[0]):
        for z0 in range(0, int(out_shape[2]), chunk):
            iz = np.arange(z0, min(z0 + chunk, int(out_shape[2]))) // f[2]
            where = np.ix_(ix, iy, iz)
            pad = mask[t][where]
            if pad.any():  # basic slices are views: the assignments land in out and sd
                out[t, :, :, z0:z0 + len(iz)][pad] = frames[t][where][pad]
                if sd is not None:
                    sd[t, :, :, z0:z0 + len(iz)][pad] = 0.0
    return True
