"""NIfTI (.nii, .nii.gz) through nibabel, keeping the header and its qform/sform codes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor

from medsr.io.meta import SourceInfo, make_volume, volume_parts
from medsr.io.values import cast_to


def read_nifti(path: str | Path) -> tuple[np.ndarray, MetaTensor]:
    """Read a NIfTI file; returns the raw array (any rank) and, for 3D, the volume.

    The array is returned so the caller can reject 2D/4D images with a clear message.
    """
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter
    header = img.header.copy()
    # nibabel moves scl_slope/scl_inter from the header to the array proxy on load
    scaled = float(img.dataobj.slope) != 1.0 or float(img.dataobj.inter) != 0.0
    source = SourceInfo(
        format="nifti",
        path=str(path),
        dtype=str(img.get_data_dtype()),
        header=header,
        extra={"nifti_scaled": bool(scaled)},
    )
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        return data, None
    return data, make_volume(data, img.affine, source)


def write_nifti(volume: MetaTensor, path: Path, dtype: str | None = None) -> None:
    """Write a volume as NIfTI with consistent sform and qform.

    A NIfTI source's header is kept (codes, descrip, intent, units, ...); only the shape,
    datatype, pixdim and the two transforms change. Integer output is rounded and clipped,
    unless the source used scl_slope/scl_inter, in which case nibabel fits a new scaling.
    """
    array, affine, source = volume_parts(volume)
    target = np.dtype(dtype or source.dtype)
    header = source.header.copy() if isinstance(source.header, nib.Nifti1Header) else None
    if header is not None and not isinstance(header, nib.Nifti2Header):
        header = nib.Nifti1Header.from_header(header)
    scaled = source.extra.get("nifti_scaled", False) and dtype is None
    data = array if scaled or target.kind == "f" else cast_to(array, target)
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(target)
    q_code = int(header["qform_code"]) if header is not None else 0
    s_code = int(header["sform_code"]) if header is not None else 0
    if q_code == 0 and s_code == 0:
        q_code = s_code = 1  # "scanner": the affine must be stored, not the pixdim fallback
    img.set_sform(affine, code=s_code or q_code)
    img.set_qform(affine, code=q_code or s_code)
    img.to_filename(str(path))
