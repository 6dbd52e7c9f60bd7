"""Read and write volumes: NIfTI, DICOM series (classic and multi-frame), NRRD/MHA and more.

``load_volume(path) -> MetaTensor`` and ``save_volume(volume, path)`` pick the format from the
path; every reader produces the contract of :mod:`medsr.io.meta`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medsr.errors import MedsrError
from medsr.io.atomic import atomic_output, check_output
from medsr.io.meta import SourceInfo, make_volume, volume_parts
from medsr.io.values import check_dtype

__all__ = ["FORMATS", "SourceInfo", "load_volume", "make_volume", "output_format",
           "save_volume", "volume_parts"]

FORMATS = ("nifti", "dicom", "nrrd", "mha")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM" or _suffix(path) in (".dcm", ".ima")


def load_volume(path: str | Path, series_uid: str | None = None) -> MetaTensor:
    """Read a 3D volume as a ``(1, X, Y, Z)`` float32 MetaTensor with its RAS affine.

    Args:
        path: a NIfTI file, a DICOM folder or multi-frame file, or any SimpleITK-readable
            file (NRRD, MHA, MHD, ...).
        series_uid: the SeriesInstanceUID to read when a DICOM folder holds several.

    Raises:
        MedsrError: missing, unreadable, 2D or 4D input, with a one-line reason.
    """
    path = Path(path)
    if not path.exists():
        raise MedsrError(f"{path}: no such file or folder")
    try:
        if path.is_dir() or _is_dicom_file(path):
            from medsr.io.dicom import read_dicom

            array = volume = read_dicom(path, series_uid=series_uid)
        elif _suffix(path) in _NIFTI_SUFFIXES:
            from medsr.io.nifti import read_nifti

            array, volume = read_nifti(path)
        else:
            from medsr.io.itk import read_itk

            array, volume = read_itk(path)
    except MedsrError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedsrError(f"cannot read {path}: {reason}") from None
    shape = tuple(int(s) for s in np.shape(array)[-3:]) if volume is not None else ()
    if volume is not None and min(shape) < 2:
        raise MedsrError(f"{path} has a single voxel along an axis {shape}: a 2D image; "
                         "medsr needs a 3D volume")
    if volume is None:
        shape = tuple(int(s) for s in np.shape(array))
        if len(shape) < 3:
            raise MedsrError(f"{path} is a {len(shape)}D image {shape}; medsr needs a 3D volume")
        raise MedsrError(f"{path} is {len(shape)}D {shape}; medsr processes 3D volumes only: "
                         "split it into 3D volumes first")
    return volume


def output_format(path: Path, fmt: str | None = None) -> str:
    """The writer for ``path``: by suffix, a folder meaning DICOM; ``fmt`` must agree with it."""
    suffix = _suffix(path)
    if suffix in _NIFTI_SUFFIXES:
        by_name = "nifti"
    elif suffix in _ITK_SUFFIXES:
        by_name = "mha" if suffix in (".mha", ".mhd") else "nrrd"
    elif path.is_dir() or suffix == "":
        by_name = "dicom"
    else:
        by_name = None
    if fmt is not None and fmt not in FORMATS:
        raise MedsrError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if by_name is None and fmt != "dicom":
        raise MedsrError(f"cannot tell the output format from {path.name!r}; use a .nii.gz, "
                         ".nrrd or .mha name, a folder for DICOM, or --format dicom")
    if fmt is not None and by_name is not None and fmt != by_name:
        raise MedsrError(f"--format {fmt} does not match the output name {path.name!r}")
    return fmt or by_name


def save_volume(volume: MetaTensor, path: str | Path, *, fmt: str | None = None,
                dtype: str | None = None, force: bool = False,
                inputs: list[Path] | None = None) -> Path:
    """Write a volume atomically; the format comes from ``fmt`` or the path.

    Args:
        volume: a MetaTensor from :func:`load_volume` or :func:`medsr.upscale`.
        path: output file, or a folder for a DICOM series.
        fmt: ``nifti``, ``dicom``, ``nrrd`` or ``mha``; default from the path.
        dtype: stored dtype; default the source's (int16 CT stays int16, rounded and clipped).
        force: replace an existing output.
        inputs: paths that must never be overwritten (the volume's own source is always one).
    """
    path = Path(path)
    kind = output_format(path, fmt)
    if dtype is not None:
        check_dtype(dtype)
    _, _, source = volume_parts(volume)
    protected = [Path(p) for p in (inputs or [])]
    if source.path:
        protected.append(Path(source.path))
    check_output(path, protected, force)
    with atomic_output(path) as tmp:
        if kind == "nifti":
            from medsr.io.nifti import write_nifti

            write_nifti(volume, tmp, dtype)
        elif kind == "dicom":
            from medsr.io.dicom import write_dicom

            tmp.mkdir()
            write_dicom(volume, tmp, dtype)
        else:
            from medsr.io.itk import write_itk

            write_itk(volume, tmp, dtype)
    return path
