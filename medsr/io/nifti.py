"""NIfTI (.nii, .nii.gz) through nibabel, keeping the header and its qform/sform codes.

4D files ``(X, Y, Z, T)`` become ``(T, X, Y, Z)`` volumes and are written back with their time
axis last; the source header's ``pixdim[4]`` (TR), ``xyzt_units`` and intent are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from nibabel.arraywriters import get_slope_inter, make_array_writer
from nibabel.openers import ImageOpener
from nibabel.volumeutils import seek_tell

from medsr.io.meta import Frames, SourceInfo, make_frames, processing_note, volume_frames
from medsr.io.values import CAST_CHUNK, cast_to
from medsr.scratch import release

if TYPE_CHECKING:
    from monai.data import MetaTensor


def read_nifti(path: str | Path) -> tuple[np.ndarray, Frames | None]:
    """Read a NIfTI file; returns the raw array (any rank) and, for 2D to 4D, the volume.

    Trailing axes of length 1 are dropped (a 4D file with one time point is 3D); a 2D image is
    a volume of one slice. The array is returned so the caller can reject 1D or 5D images
    with a clear message.
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
    if data.ndim == 2:  # one slice: its affine is 3D already
        data = data[..., None]
    if data.ndim == 4:
        return data, make_frames(np.moveaxis(data, -1, 0), img.affine, source)
    if data.ndim != 3:
        return data, None
    return data, make_frames(data, img.affine, source)


def write_nifti(volume: Frames | MetaTensor, path: Path, dtype: str | None = None) -> None:
    """Write a volume as NIfTI, its sform the volume's affine and its qform the source's
    carried to the new grid (see :func:`_qform`).

    A NIfTI source's header is kept (codes, descrip, intent, units, ...); only the shape,
    datatype, pixdim and the two transforms change. Integer output is rounded and clipped,
    unless the source used scl_slope/scl_inter, in which case nibabel fits a new scaling.
    Without a new scaling the data are cast and written a chunk of slices at a time, in file
    order, so writing holds no full-size copy (and a disk-backed :mod:`medsr.scratch` output
    is never brought into memory whole).
    """
    frames, affine, source = volume_frames(volume)
    array = frames[0] if frames.shape[0] == 1 else np.moveaxis(frames, 0, -1)
    target = np.dtype(dtype or source.dtype)
    scaled = source.extra.get("nifti_scaled", False) and dtype is None
    if scaled:  # nibabel fits slope and intercept to the whole array
        _image(array, target, affine, source, volume).to_filename(str(path))
        return
    # the header is made for a stand-in of the output's shape and dtype that costs no memory
    stand_in = np.broadcast_to(np.zeros((), target), array.shape)
    _stream(_image(stand_in, target, affine, source, volume), array, target, path)


def _image(data: np.ndarray, target: np.dtype, affine: np.ndarray, source: SourceInfo,
           volume: Frames | MetaTensor) -> nib.Nifti1Image:
    """The output image for ``data``: the source's header, both transforms, 4D units and the
    processing note."""
    header = source.header.copy() if isinstance(source.header, nib.Nifti1Header) else None
    if header is not None and not isinstance(header, nib.Nifti2Header):
        header = nib.Nifti1Header.from_header(header)
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(target)
    q_code = int(header["qform_code"]) if header is not None else 0
    s_code = int(header["sform_code"]) if header is not None else 0
    if q_code == 0 and s_code == 0:
        q_code = s_code = 1  # "scanner": the affine must be stored, not the pixdim fallback
    img.set_sform(affine, code=s_code or q_code)
    img.set_qform(*_qform(affine, header, q_code or s_code, data.shape[:3]))
    if data.ndim == 4:
        _time_axis(img.header, header, source)
    note = processing_note(volume)
    if note is not None:  # in descrip unless the source's own is there; always a comment
        if not bytes(img.header["descrip"].item()).strip(b"\x00 "):
            img.header["descrip"] = note.encode("ascii", "replace")[:79]
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", note.encode()))
    return img


def _qform(affine: np.ndarray, source: nib.Nifti1Header | None, code: int,
           shape: tuple[int, ...]) -> tuple[np.ndarray | None, int]:
    """The qform to write beside the sform (the new affine), and its code.

    A source's own qform goes through the same index map as its affine, so a file whose two
    transforms differ (the scanner's grid and a registration's, as FSL and SPM write them)
    keeps both. Without one, the qform is the affine itself, unless that is sheared (gantry
    tilt, some resampled data): a qform holds only a rotation, zooms and a shift, and nibabel
    would store the nearest rigid grid, which puts the volume elsewhere (113 mm off at the
    centre of dipy's tilted b0 EPI) in readers that prefer the qform, as ITK does; then none
    is written (code 0).
    """
    if source is not None and int(source["qform_code"]) > 0:
        try:
            mapped = source.get_qform() @ np.linalg.solve(source.get_best_affine(), affine)
        except np.linalg.LinAlgError:  # a degenerate source grid: its qform cannot be mapped
            mapped = np.full((4, 4), np.nan)
        if _rigid(mapped, shape):
            return mapped, int(source["qform_code"])
    return (affine, code) if _rigid(affine, shape) else (None, 0)


def _rigid(affine: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether a qform holds ``affine`` to 1e-3 mm at every corner of the grid."""
    if not np.all(np.isfinite(affine)):
        return False
    trial = nib.Nifti1Header()
    trial.set_qform(affine, code=1)
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    return bool(np.abs((trial.get_qform() - affine) @ corners).max() <= 1e-3)


def _stream(img: nib.Nifti1Image, array: np.ndarray, target: np.dtype, path: Path) -> None:
    """Write ``img``'s header as nibabel does, then ``array`` cast to ``target``, a chunk of
    its last (slowest on disk) axis at a time."""
    img.update_header()
    header = img.header
    writer = make_array_writer(img.dataobj, target, header.has_data_slope,
                               header.has_data_intercept)
    header.set_slope_inter(*get_slope_inter(writer))  # (1, 0): stored values are the values
    plane = max(1, int(np.prod(array.shape[:-1])))
    step = max(1, CAST_CHUNK // plane)
    with ImageOpener(str(path), "wb") as handle:
        header.write_to(handle)
        seek_tell(handle, header.get_data_offset(), write0=True)
        for start in range(0, array.shape[-1], step):
            chunk = cast_to(array[..., start:start + step], target)
            handle.write(chunk.tobytes(order="F"))
            release(array)


def _time_axis(out: nib.Nifti1Header, header: nib.Nifti1Header | None,
               source: SourceInfo) -> None:
    """Keep the source's TR and units on a 4D output; else take TR from a DICOM source."""
    if header is not None and header["dim"][0] >= 4:
        out["pixdim"][4] = header["pixdim"][4]
        out["xyzt_units"] = header["xyzt_units"]
        return
    tr = getattr(source.header, "RepetitionTime", None) if source.format == "dicom" else None
    try:
        seconds = float(tr) / 1000.0 if tr not in (None, "") else 0.0
    except (TypeError, ValueError):
        seconds = 0.0
    if seconds > 0:
        out.set_xyzt_units("mm", "sec")
        out["pixdim"][4] = seconds
