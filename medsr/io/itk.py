"""NRRD, MHA/MHD and other ITK formats through SimpleITK (LPS geometry converted to RAS).

A 4D image whose fourth axis is not mixed with space (ITK's ``JoinSeries`` layout) is read as
``(T, X, Y, Z)``; a ``(T, X, Y, Z)`` volume is written that way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from medsr.geometry import flip_lps_ras
from medsr.io.meta import Frames, SourceInfo, make_frames, processing_note, volume_frames
from medsr.io.values import cast_to

if TYPE_CHECKING:
    from monai.data import MetaTensor

# Keys that describe geometry or layout: written anew by the writer, never copied.
_GEOMETRY_KEYS = ("NRRD_space", "NRRD_kinds", "NRRD_thicknesses", "ITK_original",
                  "NRRD_measurement frame", "ElementSpacing", "Offset", "TransformMatrix")


def affine_from_image(image: sitk.Image) -> np.ndarray:
    """RAS voxel-to-world affine of a 3D SimpleITK image (or the spatial part of a 4D one)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])
    lps[:3, 3] = image.GetOrigin()[:3]
    return flip_lps_ras(lps)


def _separable_time(image: sitk.Image) -> bool:
    """True when a 4D image's fourth axis is not mixed with the three spatial ones."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(4, 4)
    return bool(np.allclose(direction[3, :3], 0) and np.allclose(direction[:3, 3], 0))


def image_from_array(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """SimpleITK image of an ``(X, Y, Z)`` array on the grid of a RAS affine."""
    lps = flip_lps_ras(affine)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(zooms.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / zooms).ravel().tolist())
    return image


def read_itk(path: str | Path) -> tuple[np.ndarray, Frames | None]:
    """Read any SimpleITK-readable image; returns the raw ``(X, Y, Z[, ...])`` array and volume."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = reader.Execute()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(vector or colour images are not supported)")
    if image.GetDimension() == 2:  # one slice, 1 mm thick at z 0 (what ITK gives it)
        image = sitk.JoinSeries([image])
    array = sitk.GetArrayFromImage(image)
    array = array.transpose(tuple(range(array.ndim))[::-1])
    if image.GetDimension() == 4 and array.shape[3] == 1:
        array = array[..., 0]
    elif image.GetDimension() == 4 and not _separable_time(image):
        raise ValueError("its fourth axis is mixed with space in the direction matrix")
    if image.GetDimension() not in (3, 4):
        return array, None
    header = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    modality = header.get("Modality") or header.get("modality")
    source = SourceInfo(format="itk", path=str(path), dtype=str(array.dtype),
                        modality=modality if modality in ("CT", "MR") else None, header=header)
    data = np.moveaxis(array, -1, 0) if array.ndim == 4 else array
    return array, make_frames(data, affine_from_image(image), source)


def write_itk(volume: Frames | MetaTensor, path: Path, dtype: str | None = None) -> None:
    """Write NRRD/MHA/MHD (chosen by suffix); non-geometry metadata of an ITK source is kept."""
    frames, affine, source = volume_frames(volume)
    target = dtype or source.dtype
    images = [image_from_array(cast_to(array, target), affine) for array in frames]
    image = images[0] if len(images) == 1 else sitk.JoinSeries(images)
    if source.format == "itk" and isinstance(source.header, dict):
        for key, value in source.header.items():
            if not key.startswith(_GEOMETRY_KEYS):
                image.SetMetaData(key, value)
    note = processing_note(volume)
    if note is not None:
        image.SetMetaData("medsr", note)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(True)
    writer.Execute(image)
