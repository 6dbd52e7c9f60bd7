"""Read and write volumes: NIfTI, DICOM series (classic and multi-frame), NRRD/MHA and more.

``load_volume(path) -> MetaTensor`` and ``save_volume(volume, path)`` pick the format from the
path; every reader produces the contract of :mod:`medsr.io.meta`. :func:`read_frames` reads
the same without building a MetaTensor (no torch, no MONAI: what ``medsr info`` and
interpolation need).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsr.errors import MedsrError
from medsr.io.atomic import atomic_output, check_output
from medsr.io.meta import (
    Frames,
    SourceInfo,
    as_metatensor,
    make_frames,
    make_volume,
    volume_frames,
    volume_parts,
)
from medsr.io.values import check_dtype

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["FORMATS", "VOLUME_SUFFIXES", "Frames", "SourceInfo", "as_metatensor",
           "default_output", "load_volume", "make_frames", "make_volume", "output_format",
           "read_frames", "save_volume", "select_volume", "volume_frames", "volume_parts"]

FORMATS = ("nifti", "dicom", "nrrd", "mha")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: file endings of single-file volumes (``.nii.gz`` before ``.nii``, so the longest matches)
VOLUME_SUFFIXES = (".nii.gz", ".nii", *_ITK_SUFFIXES)
_DICOM_SUFFIXES = (".dcm", ".ima")
_FORMAT_SUFFIX = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": ""}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom_file(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM" or _suffix(path) in (".dcm", ".ima")


def load_volume(path: str | Path, series_uid: str | None = None,
                volume: int | None = None) -> MetaTensor:
    """Read a volume as a float32 MetaTensor with its RAS affine.

    A 3D input gives ``(1, X, Y, Z)``; a 4D input (4D NIfTI/NRRD, a DICOM series or
    multi-frame file holding several volumes: time points, b-values, echoes, stacks) gives
    ``(T, X, Y, Z)`` with one affine for all volumes.

    Args:
        path: a NIfTI file, a DICOM folder or file (classic, multi-frame, Siemens mosaic), or
            any SimpleITK-readable file (NRRD, MHA, MHD, ...).
        series_uid: the SeriesInstanceUID to read when a DICOM folder holds several; a series
            of several images (echoes, magnitude and phase, a field map and its magnitude) is
            read one image at a time, ``"UID:e2"``, ``"UID:ph"`` (listed by
            :func:`medsr.io.dicom.series_images` and by the error that asks for one).
        volume: 0-based index of the one volume to read from a 4D input: ``(1, X, Y, Z)``.

    Raises:
        MedsrError: missing, unreadable, 2D or 5D input, or ``volume`` out of range, with a
            one-line reason.
    """
    return as_metatensor(read_frames(path, series_uid, volume))


def read_frames(path: str | Path, series_uid: str | None = None,
                volume: int | None = None) -> Frames:
    """:func:`load_volume` without the MetaTensor: the :class:`Frames` ``(T, X, Y, Z)``,
    checked the same way. Loads neither torch nor MONAI."""
    from medsr.io.quiet import quiet_libraries

    path = Path(path)
    if not path.exists():
        raise MedsrError(f"{path}: no such file or folder")
    if volume is not None and (isinstance(volume, bool) or int(volume) != volume):
        raise MedsrError(f"volume must be a whole number, not {volume!r}")
    with quiet_libraries(path):
        array, result = _read(path, series_uid, volume)
    if result is None:
        shape = tuple(int(s) for s in np.shape(array))
        if len(shape) < 2:
            raise MedsrError(f"{path} is a {len(shape)}D image {shape}; medsr reads slices "
                             "and volumes")
        raise MedsrError(f"{path} is {len(shape)}D {shape}; medsr reads 2D, 3D and 4D images "
                         "only: split it first")
    shape = tuple(int(s) for s in result.shape[1:])
    if sorted(shape)[1] < 2:
        raise MedsrError(f"{path} has a single voxel along two axes {shape}: a line, not a "
                         "slice or a volume")
    if volume is not None and result.source.extra.get("volume_index") != volume:
        result = select_volume(result, int(volume), str(path))
    return result


def _read(path: Path, series_uid: str | None,
          volume: int | None) -> tuple[np.ndarray | None, Frames | None]:
    from nibabel.filebasedimages import ImageFileError

    try:
        if path.is_dir() or _is_dicom_file(path):
            from medsr.io.dicom import read_dicom_frames

            result = read_dicom_frames(path, series_uid=series_uid, volume=volume)
            return None, result
        if _suffix(path) in _NIFTI_SUFFIXES:
            from medsr.io.nifti import read_nifti

            return read_nifti(path)
        from medsr.io.itk import read_itk

        return read_itk(path)
    except MedsrError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, ImageFileError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedsrError(f"cannot read {path}: {reason}") from None


def select_volume(volume: Frames | MetaTensor, index: int, name: str = "the input"
                  ) -> Frames | MetaTensor:
    """The ``index``-th (0-based) volume of a ``(T, X, Y, Z)`` volume as ``(1, X, Y, Z)``,
    of the same kind (:class:`Frames` or MetaTensor).

    ``source.extra["frames"]`` keeps only the chosen volume's labels.

    Raises:
        MedsrError: ``index`` out of range.
    """
    frames, affine, source = volume_frames(volume)
    count = frames.shape[0]
    if not 0 <= index < count:
        raise MedsrError(f"volume {index} out of range: {name} holds {count} volume"
                         f"{'s' if count != 1 else ''} (0..{count - 1})")
    source = copy.deepcopy(source)
    labels = source.extra.get("frames")
    if isinstance(labels, list) and len(labels) == count:
        source.extra["frames"] = [labels[index]]
    source.extra["volume_index"] = index
    if isinstance(volume, Frames):
        return make_frames(frames[index], affine, source)
    return make_volume(frames[index], affine, source)


def default_output(src: Path, fmt: str | None = None, folder: Path | None = None,
                   tag: str = "_sr") -> Path:
    """Where an output of ``src`` goes by default: ``scan.nii.gz -> scan_sr.nii.gz`` in
    ``folder`` (default: beside it), the format kept unless ``fmt``; a DICOM input (folder or
    file) gives a series folder."""
    name = src.name
    stem, ext = name, ""
    for known in (*VOLUME_SUFFIXES, *_DICOM_SUFFIXES):
        if name.lower().endswith(known):
            stem, ext = name[: -len(known)], name[-len(known):]
            break
    if src.is_dir() or ext.lower() in _DICOM_SUFFIXES:
        ext = ""  # DICOM in: a DICOM series folder out
    if fmt is not None:
        ext = _FORMAT_SUFFIX[fmt]
    return (folder or src.parent) / f"{stem}{tag}{ext}"


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


def save_volume(volume: MetaTensor | Frames, path: str | Path, *, fmt: str | None = None,
                dtype: str | None = None, force: bool = False,
                inputs: list[Path] | None = None) -> Path:
    """Write a volume atomically; the format comes from ``fmt`` or the path.

    Args:
        volume: a MetaTensor from :func:`load_volume` or :func:`medsr.upscale` (or
            :class:`Frames` from :func:`read_frames`).
        path: output file, or a folder for a DICOM series.
        fmt: ``nifti``, ``dicom``, ``nrrd`` or ``mha``; default from the path.
        dtype: stored dtype; default the source's (int16 CT stays int16, rounded and clipped).
        force: replace an existing output.
        inputs: paths that must never be overwritten (the volume's own source is always one).

    A NIfTI output of a DICOM source gets a JSON sidecar beside it (``out.json``: timing,
    echo, scanner, as BIDS names them) and, for diffusion, ``out.bval``/``out.bvec`` with the
    b-vectors in the output's own axes (:mod:`medsr.io.sidecar`).
    """
    path = Path(path)
    kind = output_format(path, fmt)
    if dtype is not None:
        check_dtype(dtype)
    _, _, source = volume_frames(volume)
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
    if kind == "nifti":
        from medsr.io.sidecar import write_sidecars

        frames, affine, source = volume_frames(volume)
        write_sidecars(source, tuple(frames.shape), affine, path)
    return path
