"""Siemens mosaics (EPI, DWI, fMRI: one file per volume, slices tiled in one 2D image).

Unpacking and geometry come from nibabel's DICOM wrappers, which read the Siemens CSA header
(number of slices, slice normal): the wrapper's affine (LPS, indices row, column, slice) places
each tile, so the tiles become ordinary placed frames.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsr.errors import MedsrError
from medsr.io.dicom_groups import Frame, classic_labels, image_key

log = logging.getLogger(__name__)



def _tile_header(ds) -> tuple[np.ndarray, np.ndarray, float, float, float | None]:
    """What every tile of a tiled file (mosaic, UIH) shares: orientation, pixel spacing,
    rescale slope and intercept, slice thickness (``None`` when not given)."""
    orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    spacing = np.asarray([float(v) for v in ds.PixelSpacing], dtype=np.float64)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    thickness = ds.get("SliceThickness")
    return orientation, spacing, slope, intercept, (
        float(thickness) if thickness not in (None, "") else None)

def is_mosaic(ds: Dataset) -> bool:
    """True for a Siemens mosaic image (ImageType MOSAIC)."""
    image_type = ds.get("ImageType") or []
    image_type = [image_type] if isinstance(image_type, str) else list(image_type)
    return "MOSAIC" in (str(v).upper() for v in image_type)


def _wrapper(ds: Dataset, name: str) -> Any:
    from nibabel.nicom.dicomwrappers import wrapper_from_data

    try:
        return wrapper_from_data(ds)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on odd CSA headers
        raise MedsrError(f"cannot read the Siemens header of {name}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def siemens_diffusion(ds: Dataset, name: str) -> tuple[float | None, Any]:
    """b-value and gradient direction (patient LPS axes, the CSA header's
    DiffusionGradientDirection) from a Siemens CSA header (None when absent)."""
    if "SIEMENS" not in str(ds.get("Manufacturer", "")).upper() or (0x0029, 0x1010) not in ds:
        return None, None
    try:
        return _csa_diffusion(_wrapper(ds, name))
    except Exception as exc:  # noqa: BLE001 - a damaged CSA header only loses the label
        log.debug("%s: no diffusion information in the CSA header (%s)", name, _reason(exc))
        return None, None


def _csa_diffusion(wrapper: Any) -> tuple[float | None, Any]:
    from nibabel.nicom import csareader

    csa = wrapper.csa_header
    if csa is None:
        return None, None
    b_value = csareader.get_b_value(csa)
    vector = csareader.get_vector(csa, "DiffusionGradientDirection", 3) if b_value else None
    if b_value and vector is None:
        vector = (0.0, 0.0, 0.0)  # a b > 0 image without direction: a trace image
    return b_value, vector


def mosaic_times(ds: Dataset, name: str) -> list[float] | None:
    """Acquisition time of each mosaic tile (ms from the start of the volume), from the CSA
    header's MosaicRefAcqTimes; None when absent."""
    try:

        csa = _wrapper(ds, name).csa_header
        items = csa["tags"]["MosaicRefAcqTimes"]["items"] if csa else None
        return [float(v) for v in items] if items else None
    except Exception:  # noqa: BLE001 - timing is optional
        return None


def mosaic_frames(ds: Dataset, name: str) -> list[Frame]:
    """Unpack a mosaic into placed frames, one per slice, with the CSA geometry.

    Raises:
        MedsrError: no usable CSA header (number of slices, slice normal).
    """
    from nibabel.nicom.dicomwrappers import MosaicWrapper

    wrapper = _wrapper(ds, name)
    if not isinstance(wrapper, MosaicWrapper):
        raise MedsrError(f"{name} is marked MOSAIC but has no Siemens CSA header with the "
                         "number of slices; cannot unpack it")
    try:
        data = np.asarray(wrapper.get_unscaled_data())  # (rows, columns, slices)
        affine = np.asarray(wrapper.affine, dtype=np.float64)  # LPS; (row, column, slice)
        b_value, b_vector = _csa_diffusion(wrapper)
    except Exception as exc:  # noqa: BLE001 - unpacking errors vary by nibabel version
        raise MedsrError(f"cannot unpack Siemens mosaic {name}: {_reason(exc)}") from None
    if data.ndim != 3:
        raise MedsrError(f"cannot unpack Siemens mosaic {name}: got shape {data.shape}")
    orientation, spacing, slope, intercept, thickness = _tile_header(ds)
    labels = classic_labels(ds, b_value, b_vector if b_value else None)
    instance = float(ds.get("InstanceNumber") or 0)
    times = mosaic_times(ds, name)
    if times is not None and len(times) < data.shape[2]:
        times = None
    key = image_key(ds)
    return [Frame(f"{name} slice {k + 1}", (affine @ [0.0, 0.0, k, 1.0])[:3], orientation,
                  spacing, slope, intercept, thickness, data[:, :, k], ds, labels,
                  (instance, float(k)), key,
                  times[k] / 1000.0 if times is not None else None)
            for k in range(data.shape[2])]


def is_uih_mosaic(ds: Dataset) -> bool:
    """A UIH image saved as tiles ("VFRAME"): one file per volume, the slices tiled, each
    tile's position in the private per-slice sequence (0065,1051)."""
    image_type = ds.get("ImageType") or []
    image_type = [image_type] if isinstance(image_type, str) else list(image_type)
    return "VFRAME" in (str(v).upper() for v in image_type) and (0x0065, 0x1051) in ds


def uih_frames(ds: Dataset, name: str, pixels: np.ndarray) -> list[Frame]:
    """Unpack a UIH tiled image: tile size from (0065,1004) (``64*64``, rows by columns),
    tiles row by row, each placed by its item of (0065,1051) (ImagePositionPatient, and the
    AcquisitionTime that gives slice timing).

    Raises:
        MedsrError: the tile size or positions are missing or do not fit the image.
    """
    from medsr.io.dicom_groups import clock_seconds

    items = list(ds[0x0065, 0x1051].value)
    size = str(ds.get((0x0065, 0x1004)).value if (0x0065, 0x1004) in ds else "")
    try:
        rows, cols = (int(v) for v in size.replace("x", "*").split("*"))
    except ValueError:
        raise MedsrError(f"{name} is a UIH tiled image without a tile size (0065,1004)"
                         ) from None
    per_row = int(ds.Columns) // cols
    if not items or per_row < 1 or len(items) > per_row * (int(ds.Rows) // rows):
        raise MedsrError(f"{name}: {len(items)} UIH slices do not fit its {ds.Rows}x"
                         f"{ds.Columns} tiles of {rows}x{cols}")
    orientation, spacing, slope, intercept, thickness = _tile_header(ds)
    labels = classic_labels(ds)
    instance = float(ds.get("InstanceNumber") or 0)
    key = image_key(ds)
    frames = []
    for k, item in enumerate(items):
        position = item.get("ImagePositionPatient")
        if position is None or len(position) != 3:
            raise MedsrError(f"{name} slice {k + 1} has no valid ImagePositionPatient in the "
                             "UIH per-slice sequence (0065,1051)")
        i, j = divmod(k, per_row)
        tile = pixels[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols]
        frames.append(Frame(f"{name} slice {k + 1}",
                            np.asarray([float(v) for v in position], dtype=np.float64),
                            orientation, spacing, slope, intercept, thickness, tile, ds, labels,
                            (instance, float(k)), key,
                            clock_seconds(item.get("AcquisitionTime"))))
    return frames
