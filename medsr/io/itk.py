"""NRRD, MHA/MHD and other ITK formats through SimpleITK (LPS geometry converted to RAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from medsr.geometry import flip_lps_ras
from medsr.io.meta import SourceInfo, make_volume, volume_parts
from medsr.io.values import cast_to

# Keys that describe geometry or layout: written anew by the writer, never copied.
_GEOMETRY_KEYS = ("NRRD_space", "NRRD_kinds", "NRRD_thicknesses", "ITK_original",
                  "NRRD_measurement frame", "ElementSpacing", "Offset", "TransformMatrix")


def affine_from_image(image: sitk.Image) -> np.ndarray:
    """RAS voxel-to-world affine of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return flip_lps_ras(lps)


def image_from_array(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """SimpleITK image of an ``(X, Y, Z)`` array on the grid of a RAS affine."""
    lps = flip_lps_ras(affine)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(zooms.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / zooms).ravel().tolist())
    return image


def read_itk(path: str | Path) -> tuple[np.ndarray, MetaTensor | None]:
    """Read any SimpleITK-readable image; returns the raw ``(X, Y, Z[, ...])`` array and volume."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = reader.Execute()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(vector or colour images are not supported)")
    array = sitk.GetArrayFromImage(image)
    array = array.transpose(tuple(range(array.ndim))[::-1])
    if image.GetDimension() != 3:
        return array, None
    header = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    modality = header.get("Modality") or header.get("modality")
    source = SourceInfo(format="itk", path=str(path), dtype=str(array.dtype),
                        modality=modality if modality in ("CT", "MR") else None, header=header)
    return array, make_volume(array, affine_from_image(image), source)


def write_itk(volume: MetaTensor, path: Path, dtype: str | None = None) -> None:
    """Write NRRD/MHA/MHD (chosen by suffix); non-geometry metadata of an ITK source is kept."""
    array, affine, source = volume_parts(volume)
    image = image_from_array(cast_to(array, dtype or source.dtype), affine)
    if source.format == "itk" and isinstance(source.header, dict):
        for key, value in source.header.items():
            if not key.startswith(_GEOMETRY_KEYS):
                image.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(True)
    writer.Execute(image)
