"""DICOM series through pydicom: classic single-frame series and (enhanced) multi-frame files.

Reading never trusts file names or InstanceNumber: frames are sorted by their position along the
slice normal ``cross(row_dir, col_dir)``, and the slice axis of the affine is the step between
the first and last ImagePositionPatient, so gantry tilt (a sheared grid) stays exact; positions
that wander by rounding are fitted by least squares (:mod:`medsr.io.dicom_grid`).
Writing produces a derived classic single-frame series (one file per slice).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medsr.errors import MedsrError
from medsr.geometry import flip_lps_ras
from medsr.io.dicom_grid import fit_slice_grid
from medsr.io.dicom_timing import (
    early_xa,
    frame_time,
    ge_slice_times,
    siemens_protocol_times,
)
from medsr.io.dicom_groups import (
    GE_FIELD_MAP,
    GE_FIELD_MAP_IMAGES,
    Volume,
    classic_labels,
    clock_seconds,
    describe_volumes,
    drop_derived,
    frame_labels,
    image_key,
    image_names,
    split_images,
    split_volumes,
    unflip_rows,
)
from medsr.io.dicom_groups import Frame as _Frame
from medsr.io.meta import (
    Frames,
    SourceInfo,
    as_metatensor,
    make_frames,
    processing_note,
    volume_frames,
)
from medsr.io.mosaic import (
    is_mosaic,
    is_uih_mosaic,
    mosaic_frames,
    siemens_diffusion,
    uih_frames,
)
from medsr.io.values import cast_to
from medsr.scratch import release

if TYPE_CHECKING:
    from monai.data import MetaTensor

log = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_TEMPLATE_DROP = (*_PIXEL_KEYWORDS, "PerFrameFunctionalGroupsSequence")
_WRITE_DROP = (
    *_TEMPLATE_DROP, "SharedFunctionalGroupsSequence", "NumberOfFrames", "FrameIncrementPointer",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "SliceLocation",
    "SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "ModalityLUTSequence", "IconImageSequence", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths", "ImagesInAcquisition", "PlanarConfiguration",
)
#: Per-volume labels a 4D writer sets on each instance when the source knew them.
_VOLUME_LABELS = ("AcquisitionNumber", "EchoNumbers", "DiffusionBValue", "EchoTime")
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage,
              "PT": PositronEmissionTomographyImageStorage}


# ----------------------------------------------------------------------------------- reading
def read_dicom(path: str | Path, series_uid: str | None = None,
               volume: int | None = None) -> MetaTensor:
    """:func:`read_dicom_frames` as a MetaTensor."""
    return as_metatensor(read_dicom_frames(path, series_uid, volume))


def read_dicom_frames(path: str | Path, series_uid: str | None = None,
                      volume: int | None = None) -> Frames:
    """Read a DICOM series folder (searched recursively) or a single file as a volume.

    Classic series, (enhanced) multi-frame files and Siemens mosaics are read; a series whose
    frames repeat slice positions is split into volumes (see :mod:`medsr.io.dicom_groups`) and
    read as ``(T, X, Y, Z)``, with the volumes' labels in ``source.extra["frames"]``. A series
    of several images (echoes, magnitude and phase, ...) is picked like a series:
    ``series_uid="UID:e2"`` (:func:`series_images` lists them). Files of the series without
    pixel data are skipped, with one line.

    Args:
        path: a folder holding one or more series, or a single (multi-frame or mosaic) file.
        series_uid: SeriesInstanceUID to read when the folder holds several series, with
            ``:NAME`` for one image of a series that holds several.
        volume: 0-based index of the one volume to read; needed when the volumes lie on
            different grids (stacks with different orientations).

    Returns:
        The volume; intensities have RescaleSlope/RescaleIntercept applied (HU for CT).

    Raises:
        MedsrError: ambiguous or unknown series, unreadable files, or a grid that is not a
            regular volume (mixed orientations, duplicate or missing slices, ...).
    """
    path = Path(path)
    uid, _, image = (series_uid or "").partition(":")
    uid = uid or None
    if path.is_dir():
        files = _series_files(path, uid)
    elif path.is_file():
        files = [path]
    else:
        raise MedsrError(f"{path} does not exist")
    frames, empty = [], []
    for file in files:
        loaded = _load(file, skip_empty=len(files) > 1)
        if loaded is None:
            empty.append(file.name)
        frames += loaded or []
    if not frames:
        raise MedsrError(f"{files[0].name} has no pixel data")
    if empty:
        log.warning("%s: skipped %d file%s without pixel data (not images: %s)", path,
                    len(empty), "s" if len(empty) > 1 else "", ", ".join(empty[:3]) +
                    (", ..." if len(empty) > 3 else ""))
    if path.is_file():
        uid_here = str(frames[0].dataset.get("SeriesInstanceUID", ""))
        if uid is not None and uid != uid_here:
            raise MedsrError(f"{path} belongs to series {uid_here}, not {uid}")
    ge_map = image in GE_FIELD_MAP_IMAGES and all(f.image[2] == GE_FIELD_MAP for f in frames)
    frames = _pick_image(frames, path, uid, "" if ge_map else image)
    volumes = drop_derived(split_volumes(frames), str(path))
    volumes = _ge_field_map(volumes, frames, path, uid, image)
    labels = [v.labels for v in volumes]
    count = len(volumes)
    if volume is not None:
        if not 0 <= volume < len(volumes):
            raise MedsrError(f"volume {volume} out of range: {path} holds "
                             f"{describe_volumes(labels)} (0..{len(volumes) - 1})")
        volumes, labels = [volumes[volume]], [labels[volume]]
    placed = [_sort_and_place(v.frames) for v in volumes]
    _check_same_grid(path, volumes, placed)
    values = np.stack([np.stack([f.pixels.astype(np.float64).T * f.slope + f.intercept
                                 for f in sorted_frames], axis=-1)
                       for sorted_frames, *_ in placed]).astype(np.float32)
    first = placed[0][0]
    ds0 = first[0].dataset
    modality = str(ds0.get("Modality", "") or "") or None
    all_frames = [f for sorted_frames, *_ in placed for f in sorted_frames]
    extra = {"modality_raw": modality, "slice_thickness": first[0].thickness}
    if placed[0][2] is not None:
        extra["slice_wander_mm"] = placed[0][2]
    if len(frames) != len(first) or volume is not None:
        extra["frames"] = labels
    if volume is not None:
        extra["volume_index"] = volume
    timing = _slice_timing(first, ds0, count, placed[1][0] if len(placed) > 1 else None)
    if timing is not None:
        extra["slice_timing"] = timing
    if image:
        extra["image"] = image
    if len(volumes) > 1:
        log.info("%s: %s", path, describe_volumes(labels))
    source = SourceInfo(
        format="dicom", path=str(path), dtype=_stored_dtype(all_frames, values),
        modality=modality if modality in ("CT", "MR") else None,
        header=_copy_without(ds0, _TEMPLATE_DROP), extra=extra,
    )
    return make_frames(values, flip_lps_ras(placed[0][1]), source)


def _ge_field_map(volumes: list[Volume], frames: list[_Frame], path: Path, uid: str | None,
                  image: str) -> list[Volume]:
    """A GE B0 map series (map and magnitude, nothing else telling them apart): two images,
    the first volume in acquisition order being the map (Hz), the second the magnitude."""
    if len(volumes) != 2 or not all(f.image[2] == GE_FIELD_MAP for f in frames):
        return volumes
    images = dict(zip(GE_FIELD_MAP_IMAGES, volumes))
    if image not in images:
        series = uid or str(frames[0].dataset.get("SeriesInstanceUID", ""))
        listing = "; ".join(f"{series}:{name} ({len(v.frames)} slices)"
                            for name, v in images.items())
        raise MedsrError(f"series {series} holds 2 images (a GE field map and its "
                         f"magnitude): {listing}; pick one with --series {series}:fmap")
    return [images[image]]


def _pick_image(frames: list[_Frame], path: Path, uid: str | None,
                image: str) -> list[_Frame]:
    """The frames of one image of the series (echo, magnitude/phase, ...)."""
    images = split_images(frames)
    if image and image not in images and not (len(images) == 1 and image in ("e1", "mag")):
        raise MedsrError(f"image {image!r} not found in series "
                         f"{uid or 'of ' + str(path)}; it holds: {_images(images, uid)}")
    if len(images) > 1 and not image:
        series = uid or str(frames[0].dataset.get("SeriesInstanceUID", ""))
        raise MedsrError(f"series {series} holds {len(images)} images (echoes, image "
                         f"types or polarities): {_images(images, series)}; pick one with "
                         f"--series {series}:{next(iter(images))}")
    return images[image] if image in images else next(iter(images.values()))


def _images(images: dict[str, list[_Frame]], uid: str | None) -> str:
    return "; ".join(f"{uid or ''}:{name} ({len(fs)} slices)" for name, fs in images.items())


def _slice_timing(frames: list[_Frame], ds: Dataset, volumes: int = 1,
                  second: list[_Frame] | None = None) -> list[float] | None:
    """Acquisition time of each slice of the first volume (seconds from its first slice, in
    the volume's slice order): for GE EPI of several volumes from the protocol data block, as
    dcm2niix (:func:`~medsr.io.dicom_timing.ge_slice_times`); else when the frames carry it
    (Siemens MosaicRefAcqTimes, enhanced frame times, GE TriggerTime, AcquisitionTime within
    a volume) and it spans less than one TR. Enhanced frame times of Siemens XA10 to XA30
    are taken from the ``second`` volume's frames (same slice order) where there is one, as
    dcm2niix does: the first volume's are wrong there."""
    if len(frames) < 2:
        return None
    if second is not None and len(second) == len(frames) and \
            "PerFrameFunctionalGroupsSequence" in frames[0].dataset and early_xa(ds):
        frames = second
    prescribed = sorted(range(len(frames)), key=lambda i: frames[i].order)
    ge = ge_slice_times([frames[i].dataset for i in prescribed], volumes)
    if ge is not None:
        times = [0.0] * len(frames)
        for slot, i in enumerate(prescribed):
            times[i] = ge[slot]
        return times
    candidates = [[f.time for f in frames]]
    if second is not None and len(second) == len(frames):
        candidates.append([f.time for f in second])  # the first volume's may be wrong (CMRR)
    if all(f.time is None for f in frames):
        candidates.append(_protocol_times(frames, ds))
    candidates.append([_num(f.dataset, "TriggerTime") for f in frames])
    candidates[-1] = [t / 1000.0 if t is not None else None for t in candidates[-1]]
    candidates.append([_clock(f.dataset.get("AcquisitionTime")) for f in frames])
    tr = (_num(ds, "RepetitionTime") or _num(_group_item(
        ds, None, "MRTimingAndRelatedParametersSequence"), "RepetitionTime") or 0.0) / 1000.0
    for times in candidates:
        if any(t is None for t in times):
            continue
        low = min(times)
        span = max(times) - low
        if span > 0 and (tr == 0 or span < tr):
            return [round(t - low, 6) for t in times]
    return None


def _protocol_times(frames: list[_Frame], ds: Dataset) -> list[float | None]:
    """Slice times of a Siemens mosaic's tiles from its protocol
    (:func:`~medsr.io.dicom_timing.siemens_protocol_times`), by tile; Nones where unknown."""
    times = siemens_protocol_times(ds, len(frames))
    if times is None or sorted(int(f.order[1]) for f in frames) != list(range(len(frames))):
        return [None] * len(frames)
    return [times[int(f.order[1])] for f in frames]


def _clock(value: object) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) as seconds."""
    return clock_seconds(value)


def _check_same_grid(path: Path, volumes: list[Volume],
                     placed: list[tuple[list[_Frame], np.ndarray, float | None]]) -> None:
    """All volumes of a 4D result must share shape and affine."""
    shape0, affine0 = (len(placed[0][0]), *placed[0][0][0].pixels.shape), placed[0][1]
    for sorted_frames, affine, _ in placed[1:]:
        shape = (len(sorted_frames), *sorted_frames[0].pixels.shape)
        if shape != shape0 or not np.allclose(affine, affine0, atol=1e-3):
            listing = "; ".join(
                f"{i}: {describe_volumes([v.labels]).partition('(')[2].rstrip(')') or 'volume'}"
                f" {len(p[0])} slices" for i, (v, p) in enumerate(zip(volumes, placed)))
            raise MedsrError(f"{path} holds {len(volumes)} volumes on different grids "
                             f"({listing}); read one with volume=N")


def _reason(exc: BaseException) -> str:
    """One line: the message's first, with the lines it introduces (pydicom lists each
    decoder's reason under "...all available plugins:") joined onto it."""
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not text:
        return type(exc).__name__
    return text[0] + (" " + "; ".join(text[1:]) if text[0].endswith(":") else "")


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn any error raised while parsing ``file`` into a one-line MedsrError."""
    try:
        yield
    except (MedsrError, InvalidDicomError):
        raise
    except Exception as exc:  # pydicom parses lazily and raises many types on damaged files
        raise MedsrError(f"cannot read DICOM file {file}: {_reason(exc)}") from None


def _read(file: Path, header_only: bool = False) -> Dataset:
    with _reading(file):
        ds = pydicom.dcmread(file, stop_before_pixels=header_only)
        if _truncated(ds, file):
            raise MedsrError(f"cannot read DICOM file {file}: the file is truncated")
    return ds


def _truncated(ds: Dataset, file: Path) -> bool:
    """Detect truncation, which pydicom reads silently as a shorter dataset."""
    if len(ds) == 0 and not ds.file_meta:
        return True  # cut right after the 'DICM' prefix
    try:
        meta_length = ds.file_meta.get("FileMetaInformationGroupLength")
        if meta_length is not None and file.stat().st_size < 144 + int(meta_length):
            return True  # 128-byte preamble, 'DICM', 12-byte group length element
    except (TypeError, ValueError):
        return True  # a value cut short
    tags = list(ds.keys())
    last = ds.get_item(tags[-1]) if tags else None
    return (isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF
            and last.value is not None and len(last.value) < last.length)


def _load(file: Path, skip_empty: bool = False) -> list[_Frame] | None:
    """The file's frames; None for a file without pixel data when ``skip_empty``."""
    try:
        ds = _read(file)
    except InvalidDicomError:
        raise MedsrError(f"{file} is not a DICOM file") from None
    if skip_empty and not any(k in ds for k in _PIXEL_KEYWORDS):
        return None
    with _reading(file):
        return _frames(ds, file.name)


def series_header(file: Path) -> tuple[str, str, int] | None:
    """SeriesInstanceUID, description and frame count of an image file; None to skip it."""
    entry = _header(file)
    return None if entry is None else entry[:3]


#: header scans by file: (path, size, mtime) -> (uid, description, frames, image keys)
_HEADERS: dict[tuple[str, int, int], tuple[str, str, int, tuple] | None] = {}
_HEADERS_MAX = 200_000


def _header(file: Path) -> tuple[str, str, int, tuple] | None:
    """A file's series, description, frame count and image keys, read once per file version
    (size and modification time): the headers of a big folder are scanned once, not again for
    each series read from it."""
    stat = file.stat()
    key = (str(file.absolute()), stat.st_size, stat.st_mtime_ns)
    if key in _HEADERS:
        return _HEADERS[key]
    entry = _scan_header(file)
    if len(_HEADERS) >= _HEADERS_MAX:
        _HEADERS.clear()
    _HEADERS[key] = entry
    return entry


def _scan_header(file: Path) -> tuple[str, str, int, tuple] | None:
    try:
        ds = _read(file, header_only=True)
    except InvalidDicomError:
        log.debug("skipping %s: not a DICOM file", file)
        return None
    with _reading(file):
        if "SeriesInstanceUID" in ds and "Rows" in ds:
            count = int(ds.get("NumberOfFrames", 1) or 1)
            groups = ds.get("PerFrameFunctionalGroupsSequence")
            keys = {image_key(ds, g) for g in groups} if groups else {image_key(ds)}
            return (str(ds.SeriesInstanceUID), str(ds.get("SeriesDescription", "") or ""),
                    count, tuple(sorted(keys, key=str)))
        sop = ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
        if sop is not None and "Image Storage" in UID(str(sop)).name:
            raise MedsrError(f"{file} is an incomplete DICOM image (no Rows or "
                             "SeriesInstanceUID; truncated?)")
    log.debug("skipping %s: not an image (DICOMDIR, report, ...)", file)
    return None


def _scan(folder: Path) -> dict[str, list[tuple[Path, str, int, tuple]]]:
    """The folder's image files by SeriesInstanceUID (headers from the scan cache)."""
    series: dict[str, list[tuple[Path, str, int, tuple]]] = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if (header := _header(file)) is not None:
            series.setdefault(header[0], []).append((file, *header[1:]))
    return series


def series_images(folder: str | Path, series_uid: str | None = None) -> list[tuple[str, dict]]:
    """The images of a series as ``(key, labels)``, from the headers alone: one
    ``(UID, {})`` for an ordinary series, else ``("UID:e2", {"echo": 2, "te": 9.84,
    "type": "ph"})``-style entries, one per echo, image type and GE phase-encoding polarity
    (``"polarity": "rev"``); each key reads that image with :func:`read_dicom_frames`
    (``series_uid=key``)."""
    folder = Path(folder)
    series = _scan(folder) if folder.is_dir() else {}
    if folder.is_file():
        header = _header(folder)
        series = {header[0]: [(folder, *header[1:])]} if header else {}
    uid = series_uid or (next(iter(series)) if len(series) == 1 else None)
    if uid not in series:
        raise MedsrError(f"series {series_uid} not found in {folder}" if series_uid else
                         f"{folder} holds {len(series)} DICOM series; name one")
    keys = [k for _, _, _, file_keys in series[uid] for k in file_keys]
    names = image_names(keys)
    if len(names) == 1 and keys[0][2] == GE_FIELD_MAP and sum(n for _, _, n, _ in series[uid]) \
            > 1:
        return [(f"{uid}:{name}", {"echo": keys[0][0], "te": keys[0][1], "type": name})
                for name in GE_FIELD_MAP_IMAGES]
    if len(names) <= 1:
        return [(uid, {})]
    return [(f"{uid}:{name}", {"echo": key[0], "te": key[1], "type": key[2] or "mag",
                               **({"polarity": key[3]} if key[3] else {})})
            for key, name in sorted(names.items(), key=lambda item: item[1])]


def _series_files(folder: Path, series_uid: str | None) -> list[Path]:
    """Group the folder's image files by SeriesInstanceUID and pick one series."""
    scanned = _scan(folder)
    series = {uid: [(file, desc, count) for file, desc, count, _ in items]
              for uid, items in scanned.items()}
    if not series:
        raise MedsrError(f"no DICOM image files found in {folder}")
    if series_uid is None and len(series) > 1:
        raise MedsrError(f"{folder} holds {len(series)} DICOM series: {_describe(series)}; "
                         "pick one with --series UID")
    if series_uid is not None and series_uid not in series:
        raise MedsrError(f"series {series_uid} not found in {folder}; available: "
                         f"{_describe(series)}")
    chosen = series[series_uid] if series_uid is not None else next(iter(series.values()))
    return [file for file, _, _ in chosen]


def _describe(series: dict[str, list[tuple[Path, str, int]]]) -> str:
    return "; ".join(f"{uid} ({items[0][1] or 'no description'}, "
                     f"{sum(n for _, _, n in items)} slices)" for uid, items in series.items())


def _num(ds: Dataset | None, keyword: str, default: float | None = None) -> float | None:
    value = ds.get(keyword) if ds is not None else None
    return default if value is None or value == "" else float(value)


def _vec(ds: Dataset | None, keyword: str, size: int, name: str) -> np.ndarray:
    value = ds.get(keyword) if ds is not None else None
    if value is None or len(value) != size:
        raise MedsrError(f"{name} has no valid {keyword}; cannot place it in space")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _group_item(ds: Dataset, frame_group: Dataset | None, keyword: str) -> Dataset | None:
    """First item of a functional group macro, per-frame first, then shared."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (frame_group, shared[0] if shared else None):
        if group is not None and group.get(keyword):
            return group.get(keyword)[0]
    return None


def _frames(ds: Dataset, name: str) -> list[_Frame]:
    """Split a dataset into placed 2D frames (one for a classic slice)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise MedsrError(f"{name} has no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise MedsrError(f"{name} is a colour image; only greyscale volumes are supported")
    _check_decoder(ds, name)
    instance = float(_num(ds, "InstanceNumber", 0.0) or 0.0)
    if is_mosaic(ds) and int(ds.get("NumberOfFrames", 1) or 1) == 1:
        return mosaic_frames(ds, name)
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise MedsrError(f"cannot decode pixel data of {name}: {_reason(exc)}") from None
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if count == 1 and "ImagePositionPatient" not in ds and is_uih_mosaic(ds):
        return uih_frames(ds, name, pixels.reshape(int(ds.Rows), int(ds.Columns)))
    pixels = pixels.reshape(count, int(ds.Rows), int(ds.Columns))
    slope, intercept = _num(ds, "RescaleSlope", 1.0), _num(ds, "RescaleIntercept", 0.0)
    thickness = _num(ds, "SliceThickness")
    if "PerFrameFunctionalGroupsSequence" in ds:
        groups = ds.PerFrameFunctionalGroupsSequence
        if len(groups) != count:
            raise MedsrError(f"{name} has {count} frames but {len(groups)} per-frame groups")
        frames = []
        for i, group in enumerate(groups):
            label = f"{name} frame {i + 1}"
            key = image_key(ds, group)
            measures = _group_item(ds, group, "PixelMeasuresSequence")
            value = _group_item(ds, group, "PixelValueTransformationSequence")
            frames.append(_Frame(
                label,
                _vec(_group_item(ds, group, "PlanePositionSequence"),
                     "ImagePositionPatient", 3, label),
                _vec(_group_item(ds, group, "PlaneOrientationSequence"),
                     "ImageOrientationPatient", 6, label),
                _vec(measures, "PixelSpacing", 2, label),
                _num(value, "RescaleSlope", slope), _num(value, "RescaleIntercept", intercept),
                _num(measures, "SliceThickness", thickness), unflip_rows(pixels[i], key), ds,
                frame_labels(ds, group), (instance, float(i)), key, frame_time(ds, group)))
        return frames
    position = _vec(ds, "ImagePositionPatient", 3, name)
    orientation = _vec(ds, "ImageOrientationPatient", 6, name)
    pixel_spacing = _vec(ds, "PixelSpacing", 2, name)
    step = _num(ds, "SpacingBetweenSlices") or thickness
    if count > 1 and not step:
        raise MedsrError(f"{name} is a multi-frame file without per-frame positions "
                         "(PerFrameFunctionalGroupsSequence) or SpacingBetweenSlices")
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    labels = classic_labels(ds, *siemens_diffusion(ds, name))
    key = image_key(ds)
    pixels = unflip_rows(pixels, key)
    return [_Frame(name if count == 1 else f"{name} frame {i + 1}",
                   position + i * (step or 0.0) * normal, orientation, pixel_spacing,
                   slope, intercept, thickness, pixels[i], ds, labels, (instance, float(i)),
                   key)
            for i in range(count)]


def _check_decoder(ds: Dataset, name: str) -> None:
    """Refuse compressed pixel data no installed decoder handles, naming the extra."""
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None or not UID(str(syntax)).is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(UID(str(syntax))).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise MedsrError(f"{name} holds {UID(str(syntax)).name} compressed pixel data and no "
                         'installed decoder reads it; install them with: pip install '
                         '"medsr[dicom]"')


def _sort_and_place(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray, float | None]:
    """Sort frames along the slice normal, fit their even grid (:mod:`medsr.io.dicom_grid`);
    returns the frames, the LPS affine and the positions' wander (mm, None when exact)."""
    first = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.orientation, first.orientation, atol=1e-4):
            raise MedsrError(f"{f.name} and {first.name} have different ImageOrientationPatient;"
                             " a volume needs one orientation (localizer in the series?)")
        if f.pixels.shape != first.pixels.shape:
            raise MedsrError(f"{f.name} and {first.name} have different Rows/Columns")
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise MedsrError(f"{f.name} and {first.name} have different PixelSpacing")
    row = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    col = first.orientation[3:] / np.linalg.norm(first.orientation[3:])
    normal = np.cross(row, col)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    positions = np.array([f.position for f in frames])
    wander = None
    if len(frames) > 1:
        grid = fit_slice_grid(positions, normal, [f.name for f in frames])
        origin, step, wander = grid.origin, grid.step, grid.wander_mm
    else:
        origin = positions[0]
        step = normal * (_num(first.dataset, "SpacingBetweenSlices") or first.thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row * first.pixel_spacing[1]
    affine[:3, 1] = col * first.pixel_spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return frames, affine, wander


def _stored_dtype(frames: list[_Frame], values: np.ndarray) -> str:
    """Smallest dtype that holds the rescaled values exactly (float32 when not integer)."""
    if any(f.pixels.dtype.kind == "f" or f.slope != 1.0 or not float(f.intercept).is_integer()
           for f in frames):
        return "float32"
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 255 and int(frames[0].dataset.get("BitsAllocated", 16)) == 8:
        return "uint8"
    if lo >= -32768 and hi <= 32767:
        return "int16"
    unsigned16 = all(int(f.dataset.get("BitsAllocated", 16)) == 16
                     and int(f.dataset.get("PixelRepresentation", 0)) == 0 for f in frames)
    return "uint16" if unsigned16 and lo >= 0 and hi <= 65535 else "int32"


def _copy_without(ds: Dataset, drop: Iterable[str]) -> Dataset:
    """Copy of a dataset's elements (file meta excluded) without the ``drop`` keywords."""
    drop = set(drop)
    out = Dataset()
    for elem in ds:
        if elem.keyword not in drop:
            out.add(copy.deepcopy(elem))
    return out


# ----------------------------------------------------------------------------------- writing
def write_dicom(volume: Frames | MetaTensor, folder: Path, dtype: str | None = None) -> list[Path]:
    """Write a volume as a derived classic single-frame series into an existing empty folder.

    Integer dtypes are rounded and clipped and stored exactly as 16-bit values (with an
    integer RescaleIntercept when the range needs it); float dtypes are stored as uint16 with
    a series-wide RescaleSlope/RescaleIntercept (error at most slope/2). Readers order slices
    along ``cross(row_dir, col_dir)``: a volume whose slice axis points the other way comes
    back with the slice axis reversed (same voxels in space). A 4D volume ``(T, X, Y, Z)``
    gives one series whose instances carry TemporalPositionIdentifier ``t + 1`` and
    NumberOfTemporalPositions ``T`` (plus the source's per-volume labels it knows).

    Args:
        volume: the volume to write.
        folder: an existing, empty folder; files are named ``IM000001.dcm``, ...
        dtype: value type to store; defaults to the source's dtype.

    Returns:
        The written files, in volume then slice order.
    """
    frames, affine, source = volume_frames(volume)
    folder = Path(folder)
    if not folder.is_dir() or any(folder.iterdir()):
        raise MedsrError(f"{folder} must be an existing empty folder")
    lps = flip_lps_ras(affine)
    sx, sy, sz = np.linalg.norm(lps[:3, :3], axis=0)
    row, col = lps[:3, 0] / sx, lps[:3, 1] / sy
    if abs(row @ col) > 1e-4:
        raise MedsrError("the in-plane axes are not perpendicular; DICOM cannot store this grid")
    store = StoredValues.fit(frames, np.dtype(dtype or source.dtype))
    count, nx, ny, nz = frames.shape
    ds = _base_dataset(source)
    note = processing_note(volume)
    if note is not None:
        ds.DerivationDescription = f"super-resolved by {note}"[:1024]
    if count > 1:
        for keyword in (*_VOLUME_LABELS, "TemporalPositionIdentifier",
                        "DiffusionGradientOrientation"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.NumberOfTemporalPositions = count
    ds.ImageOrientationPatient = [_ds(v, 10) for v in (*row, *col)]
    ds.PixelSpacing = [_ds(sy, 10), _ds(sx, 10)]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(sz, 10)
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = 16, store.bits()
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(store.dtype.kind == "i")
    ds.RescaleSlope, ds.RescaleIntercept = store.slope, store.intercept
    padded = (getattr(volume, "meta", None) or {}).get("medsr_padding")  # put back exactly
    if padded and padded["range_hu"][0] == padded["range_hu"][1] and not store.rescale:
        ds.PixelPaddingValue = int(store(np.array([padded["range_hu"][0]]))[0])
    normal = np.cross(row, col)
    labels = source.extra.get("frames")
    labels = labels if isinstance(labels, list) and len(labels) == count else [{}] * count
    files = []
    for t in range(count):
        if count > 1:
            ds.TemporalPositionIdentifier = t + 1
            for keyword, value in labels[t].items():
                if keyword in _VOLUME_LABELS and isinstance(value, (int, float)):
                    setattr(ds, keyword, value)
            direction = labels[t].get("DiffusionGradientOrientation")
            if isinstance(direction, (list, tuple)) and len(direction) == 3:
                ds.DiffusionGradientOrientation = [float(v) for v in direction]  # LPS
            elif "DiffusionGradientOrientation" in ds:
                del ds.DiffusionGradientOrientation
        for k in range(nz):
            position = lps @ np.array([0.0, 0.0, k, 1.0])
            ds.ImagePositionPatient = [_ds(v, 6) for v in position[:3]]
            ds.SliceLocation = _ds(position[:3] @ normal, 6)
            ds.InstanceNumber = t * nz + k + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            pixels = store(frames[t, :, :, k])
            ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(pixels.T).tobytes())
            file = folder / f"IM{t * nz + k + 1:06d}.dcm"
            ds.save_as(file, enforce_file_format=True)
            files.append(file)
        release(frames)
    return files


def _ds(value: float, decimals: int | None = None) -> str:
    """A DS string (at most 16 characters), optionally rounded first."""
    value = float(value)
    if decimals is not None:
        value = round(value, decimals) + 0.0  # + 0.0 drops a negative zero
    return format_number_as_ds(value)


@dataclass
class StoredValues:
    """How values become 16-bit stored pixels: the stored dtype, RescaleSlope and
    RescaleIntercept (DS strings), fitted once to the whole volume's range, then applied a
    slice at a time (so writing holds no full-size copy)."""

    target: np.dtype
    dtype: np.dtype
    slope: str = "1"
    intercept: str = "0"
    lo: float = 0.0
    hi: float = 0.0
    rescale: bool = False

    @classmethod
    def fit(cls, frames: np.ndarray, target: np.dtype) -> StoredValues:
        lo, hi = _finite_range(frames)
        if target.kind in "iub":
            target = target if target.kind != "b" else np.dtype(np.uint8)
            lo, hi = (int(v) for v in cast_to(np.array([lo, hi]), target))
            if lo >= 0 and hi <= 65535:
                return cls(target, np.dtype("<u2"), lo=lo, hi=hi)
            if lo >= -32768 and hi <= 32767:
                return cls(target, np.dtype("<i2"), lo=lo, hi=hi)
            if hi - lo <= 65535:
                return cls(target, np.dtype("<u2"), intercept=str(lo), lo=lo, hi=hi)
            log.warning("integer range %d..%d exceeds 16 bits; storing with a rescale slope",
                        lo, hi)
        slope, intercept = _ds((hi - lo) / 65535 if hi > lo else 1.0), _ds(lo)
        return cls(target, np.dtype("<u2"), slope, intercept, lo, hi, rescale=True)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Stored pixels for ``values`` (any shape)."""
        if self.target.kind in "iu":
            values = cast_to(values, self.target).astype(np.int64)
        if self.rescale:
            scaled = (values.astype(np.float64) - float(self.intercept)) / float(self.slope)
            return np.clip(np.rint(scaled), 0, 65535).astype(self.dtype)
        return (values - int(self.intercept)).astype(self.dtype)

    def bits(self) -> int:
        """BitsStored: enough for the stored range (the mapping is monotone)."""
        lo, hi = (int(v) for v in self(np.array([self.lo, self.hi], dtype=np.float64)))
        bits = hi.bit_length()
        if self.dtype.kind == "i":
            bits = max(bits, (-lo - 1).bit_length() if lo < 0 else 0) + 1
        return min(16, max(1, bits))


def _finite_range(frames: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value, a slice at a time; an error for NaN or infinite values."""
    lo, hi = math.inf, -math.inf
    for t in range(frames.shape[0]):
        for k in range(frames.shape[-1]):
            plane = frames[t, ..., k]
            if not np.isfinite(plane).all():
                raise MedsrError("the volume holds NaN or infinite values; DICOM cannot "
                                 "store them")
            lo, hi = min(lo, float(plane.min())), max(hi, float(plane.max()))
        release(frames)
    return lo, hi


def _base_dataset(source: SourceInfo) -> Dataset:
    """Series-level dataset: the source's template (patient, study, equipment) or a fresh one."""
    date, time = datetime.now().strftime("%Y%m%d %H%M%S").split()
    if source.format == "dicom" and isinstance(source.header, Dataset):
        ds = _copy_without(source.header, _WRITE_DROP)
        for tag in [t for t in ds.keys() if t.is_private or 0x6000 <= t.group <= 0x60FF]:
            del ds[tag]  # private tags and overlays would no longer match the pixels
        modality = str(ds.get("Modality", "") or "") or source.modality or "OT"
        description = str(ds.get("SeriesDescription", "") or "")
        number = ds.get("SeriesNumber")
        image_type = ds.get("ImageType") or []
        image_type = [] if isinstance(image_type, str) else list(image_type)[2:]
    else:
        ds = Dataset()
        ds.PatientName, ds.PatientID = "Anonymous", ""
        ds.PatientBirthDate = ds.PatientSex = ""
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
        ds.StudyDate, ds.StudyTime = date, time
        ds.StudyID = ds.AccessionNumber = ds.ReferringPhysicianName = ""
        ds.PositionReferenceIndicator = ds.Manufacturer = ""
        modality, description, number, image_type = source.modality or "OT", "", None, []
    ds.Modality = modality
    ds.SOPClassUID = _SOP_CLASS.get(modality, SecondaryCaptureImageStorage)
    if ds.SOPClassUID == SecondaryCaptureImageStorage and "ConversionType" not in ds:
        ds.ConversionType = "WSD"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(number) + 1000 if number not in (None, "") else 1000
    ds.SeriesDescription = f"{description[:55]} medsr SR".strip()
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type]
    ds.DerivationDescription = "super-resolved by medsr"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
