"""Split the frames of one DICOM series into volumes (time points, b-values, echoes, stacks).

A series whose frames repeat slice positions (fMRI, DWI, multi-echo, one Siemens mosaic per
time point, enhanced multi-frame with several stacks or dimensions) holds several volumes. Each
frame carries ``labels`` read from its header (TemporalPositionIdentifier, AcquisitionNumber,
b-value, EchoNumbers, StackID, ...); the frames are grouped by the first label, or combination
of labels, that splits them into volumes covering the same slice positions. When no label does
(GE fMRI and DWI, which carry no temporal tags), the frames are grouped by acquisition order:
the n-th frame at each place, in InstanceNumber order, belongs to volume n, as dcm2niix does.
Frames that repeat positions with nothing to tell them apart (equal InstanceNumbers, places
seen unequally often) are refused.

Before that, a series is split into *images* (:func:`split_images`): echoes and image types
(magnitude, phase, real, imaginary, field map) are never mixed in one 4D volume; each is picked
like a series (``UID:e2``, ``UID:ph``). Diffusion labels come from the standard tags or the
vendors' private ones (:func:`vendor_diffusion`), gradient directions always in patient (LPS)
axes; a derived trace/ADC volume inside a DWI series is left out (:func:`drop_derived`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsr.errors import MedsrError

log = logging.getLogger(__name__)

#: Labels that tell volumes apart, most telling first.
LABEL_KEYS = (
    "TemporalPositionIdentifier", "TemporalPositionIndex", "StackID", "AcquisitionNumber",
    "DiffusionBValue", "DiffusionGradientOrientation", "EchoNumbers", "EffectiveEchoTime",
    "TriggerTime", "DimensionIndexValues",
)
#: Labels whose value order is not the acquisition order: such volumes are ordered by
#: InstanceNumber (then frame number) instead.
_UNORDERED = ("DiffusionBValue", "DiffusionGradientOrientation")
_POSITION_MM = 0.01


@dataclass
class Frame:
    """One 2D image placed in space (a classic slice, one frame, or one mosaic tile)."""

    name: str
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient (6,)
    pixel_spacing: np.ndarray  # PixelSpacing: (row spacing, column spacing)
    slope: float
    intercept: float
    thickness: float | None
    pixels: np.ndarray  # (Rows, Columns) stored values
    dataset: Dataset
    labels: dict[str, Any] = field(default_factory=dict)
    order: tuple[float, ...] = (0.0,)  # acquisition order: (InstanceNumber, frame number)
    image: tuple = (None, None, None, None)  # (echo, TE ms, kind, polarity): see image_key
    time: float | None = None  # acquisition time within the series, seconds (slice timing)


def _number(value: Any) -> float | int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(number):
        return None
    return int(number) if number.is_integer() else round(number, 4)


def _vector(value: Any) -> tuple[float, ...] | None:
    try:
        vec = tuple(round(float(v), 4) + 0.0 for v in value)
    except (TypeError, ValueError):
        return None
    return vec or None


def classic_labels(ds: Dataset, b_value: float | None = None,
                   b_vector: Any = None) -> dict[str, Any]:
    """Volume labels of a classic (single-frame or mosaic) image.

    Args:
        ds: the image's dataset.
        b_value: a b-value found elsewhere (Siemens CSA header via nibabel) when the standard
            DiffusionBValue (0018,9087) is absent.
        b_vector: the matching gradient direction (patient LPS axes).
    """
    labels: dict[str, Any] = {}
    for key in ("TemporalPositionIdentifier", "AcquisitionNumber", "EchoNumbers",
                "TriggerTime"):
        value = _number(ds.get(key))
        if value is not None:
            labels[key] = value
    diffusion = ds.get("MRDiffusionSequence")
    item = diffusion[0] if diffusion else ds
    b_std = _number(item.get("DiffusionBValue"))
    direction = _vector(item.get("DiffusionGradientOrientation") or ()) \
        if b_std is not None else None
    if b_std is None:
        b_std, direction = _number(b_value), _vector(b_vector) if b_vector is not None else None
    if b_std is None:
        vendor_b, vendor_vec = vendor_diffusion(ds)
        b_std, direction = _number(vendor_b), _vector(vendor_vec) if vendor_vec is not None \
            else None
    if b_std is not None:
        labels["DiffusionBValue"] = b_std
        if direction is None and b_std == 0:
            direction = (0.0, 0.0, 0.0)
    if direction is not None:
        labels["DiffusionGradientOrientation"] = direction
    if _derived_diffusion(ds, b_std, direction):
        labels["DerivedDiffusion"] = 1
    return labels


def _private(ds: Dataset, group: int, element: int) -> Any:
    elem = ds.get((group, element))
    return None if elem is None else elem.value


def _floats(value: Any, size: int) -> list[float] | None:
    try:
        values = [float(v) for v in (value if isinstance(value, (list, tuple)) or
                                     hasattr(value, "__iter__") and not isinstance(
                                         value, (str, bytes)) else [value])]
    except (TypeError, ValueError):
        return None
    return values if len(values) >= size else None


def vendor_diffusion(ds: Dataset) -> tuple[float | None, tuple[float, ...] | None]:
    """b-value and gradient direction (patient LPS axes) from a vendor's private tags, where
    the standard DiffusionBValue (0018,9087) is absent or empty.

    GE: (0043,1039) first value (less 10^9 where added), directions (0019,10bb/bc/bd) along
    the image's row, column and reversed slice normal (as dcm2niix reads them). Philips:
    (2001,1003) and (2005,10b0..b2), already LPS. Siemens (classic, non-mosaic):
    (0019,100c) and (0019,100e), LPS. UIH: (0065,1009) and (0065,1037) along the image's
    row, column and slice normal (checked against dcm2niix on UIH's rotated DTI).
    """
    maker = str(ds.get("Manufacturer", "") or "").upper()
    if "GE" in maker.split() or maker.startswith("GE "):
        raw = _floats(_private(ds, 0x0043, 0x1039), 1)
        if raw is None:
            return None, None
        b = raw[0] % 1_000_000_000
        parts = [_floats(_private(ds, 0x0019, e), 1) for e in (0x10BB, 0x10BC, 0x10BD)]
        if b == 0 or any(p is None for p in parts):
            return b, None
        g = np.array([p[0] for p in parts])
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        if iop is None or not np.any(g):
            return b, tuple(g.tolist())
        row, col = np.array(iop[:3]), np.array(iop[3:])
        normal = np.cross(row, col)
        return b, tuple((g[0] * row + g[1] * col - g[2] * normal).tolist())
    if "PHILIPS" in maker:
        b = _floats(_private(ds, 0x2001, 0x1003), 1)
        parts = [_floats(_private(ds, 0x2005, e), 1) for e in (0x10B0, 0x10B1, 0x10B2)]
        vec = tuple(p[0] for p in parts) if all(p is not None for p in parts) else None
        return (b[0] if b else None), vec
    if "SIEMENS" in maker:
        b = _floats(_private(ds, 0x0019, 0x100C), 1)
        vec = _floats(_private(ds, 0x0019, 0x100E), 3)
        return (b[0] if b else None), (tuple(vec[:3]) if vec else None)
    if "UIH" in maker or "UNITED IMAGING" in maker:
        b = _floats(_private(ds, 0x0065, 0x1009), 1)
        vec = _floats(_private(ds, 0x0065, 0x1037), 3)
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        if vec is None or iop is None:
            return (b[0] if b else None), (tuple(vec[:3]) if vec else None)
        row, col = np.array(iop[:3]), np.array(iop[3:])
        world = vec[0] * row + vec[1] * col + vec[2] * np.cross(row, col)
        return (b[0] if b else None), tuple(world.tolist())
    return None, None


_DERIVED_TYPES = ("TRACEW", "TRACE", "ADC", "ISOTROPIC", "EADC", "FA", "CALC_BVALUE")


def _derived_diffusion(ds: Dataset, b_value: float | None, direction: Any) -> bool:
    """Whether an image of a DWI series is a derived trace/ADC image (not an acquisition)."""
    image_type = ds.get("ImageType") or []
    tokens = {str(v).upper() for v in ([image_type] if isinstance(image_type, str)
                                       else image_type)}
    if tokens & set(_DERIVED_TYPES):
        return True
    philips = _private(ds, 0x2001, 0x1004)  # Philips diffusion direction label: I = isotropic
    return (b_value or 0) > B0_MAX and str(philips or "").strip().upper() == "I"


def clock_seconds(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) as seconds since midnight."""
    text = str(value or "").strip()
    if len(text) < 6 or not text[:6].isdigit():
        return None
    try:
        return int(text[:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:])
    except ValueError:
        return None


# ----------------------------------------------------------------------------------- images
#: image kinds by ImageType token, ComplexImageComponent, GE (0043,102F), Philips (2005,1011)
_KINDS = {"M": "mag", "MAGNITUDE": "mag", "P": "ph", "PHASE": "ph", "R": "real",
          "REAL": "real", "I": "imag", "IMAGINARY": "imag", "FIELD_MAP": "fmap",
          "FIELDMAP": "fmap", "B0MAP": "fmap", "B0_MAP": "fmap"}
_GE_KINDS = {0: "mag", 1: "ph", 2: "real", 3: "imag"}


def image_key(ds: Dataset, group: Dataset | None = None) -> tuple:
    """(EchoNumbers, echo time in ms, kind, polarity) of one frame: frames that differ in any
    are different images (echoes, magnitude/phase/real/imaginary/field map, GE's forward and
    reversed phase-encoding polarity: :func:`ge_polarity`), never one 4D mix.

    Args:
        ds: the file's dataset.
        group: the frame's per-frame functional group (enhanced multi-frame), if any.
    """
    echo = _number(ds.get("EchoNumbers"))
    echo = echo if isinstance(echo, int) else None
    te = _number(ds.get("EchoTime"))
    kind = None
    if group is not None or "SharedFunctionalGroupsSequence" in ds:
        for sequence in ("MREchoSequence",):
            item = (group.get(sequence) if group is not None else None) or _shared(ds,
                                                                                  sequence)
            if item and (value := _number(item[0].get("EffectiveEchoTime"))) is not None:
                te = value
        for sequence in ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence"):
            item = (group.get(sequence) if group is not None else None) or _shared(ds,
                                                                                  sequence)
            if item:
                component = str(item[0].get("ComplexImageComponent", "") or "").upper()
                kind = _KINDS.get(component, kind)
                frame_type = item[0].get("FrameType") or []
                if any(str(v).upper() in ("FIELD_MAP", "B0_MAP") for v in frame_type):
                    kind = "fmap"
    if kind is None:
        kind = _kind_of(ds)
    if kind in (None, "mag") and is_ge_field_map(ds):
        kind = GE_FIELD_MAP
    return echo, (round(float(te), 2) if te is not None else None), kind, ge_polarity(ds)


#: the kind of every frame of a GE B0 map series: its field map (Hz) and magnitude share the
#: places and all tags; the first volume in acquisition order is the map, the second the
#: magnitude (as dcm2niix reads them: ``_fieldmaphz`` and the magnitude)
GE_FIELD_MAP = "ge_b0map"
GE_FIELD_MAP_IMAGES = ("fmap", "mag")


#: GE ``epi_pepolar`` mode, UserData12 (0019,10B3): which volumes (by their 1-based
#: TemporalPositionIdentifier) have reversed phase-encoding polarity
_PEPOLAR_REVERSED = {0: lambda n: False, 1: lambda n: True,
                     2: lambda n: n is not None and n > 0 and n % 2 == 1,
                     3: lambda n: n is not None and n > 0 and n % 2 == 0}


def ge_polarity(ds: Dataset) -> str | None:
    """Phase-encoding polarity of a frame of GE's ``epi_pepolar`` research sequence: ``"rev"``
    (reversed), ``"fwd"``, or None for any other series.

    The sequence is named in PulseSequenceName (0019,109C); UserData12 (0019,10B3) holds its
    mode: 0 all forward, 1 all reversed, 2 odd volumes reversed (rev-fwd), 3 even volumes
    reversed (fwd-rev), volumes counted by TemporalPositionIdentifier (a frame without one
    counts as forward), as dcm2niix reads them. Nothing else in the header says so: a
    reversed frame is stored with its rows in reverse order (see :func:`unflip_rows`).
    """
    maker = str(ds.get("Manufacturer", "") or "").upper()
    name = str(_private(ds, 0x0019, 0x109C) or "")
    if not maker.startswith("GE") or "epi_pepolar" not in name:
        return None
    mode = _number(_private(ds, 0x0019, 0x10B3))
    reversed_ = _PEPOLAR_REVERSED.get(round(mode) if mode is not None else 0,
                                      _PEPOLAR_REVERSED[0])
    return "rev" if reversed_(_number(ds.get("TemporalPositionIdentifier"))) else "fwd"


def unflip_rows(pixels: np.ndarray, key: tuple) -> np.ndarray:
    """Pixels ``(..., Rows, Columns)`` of a frame with image ``key``, their rows put back in
    the order the header's geometry describes when GE stored them reversed (``"rev"``
    polarity), as dcm2niix flips them."""
    return pixels[..., ::-1, :] if len(key) > 3 and key[3] == "rev" else pixels


def is_ge_field_map(ds: Dataset) -> bool:
    """A GE B0 field map series: pulse sequence name (0019,109C) or internal name (0019,109E)
    containing ``B0map`` (``3db0map``, ``B0map``)."""
    maker = str(ds.get("Manufacturer", "") or "").upper()
    names = [str(_private(ds, 0x0019, e) or "").strip().upper() for e in (0x109C, 0x109E)]
    return maker.startswith("GE") and any("B0MAP" in name for name in names)


def _kind_of(ds: Dataset) -> str | None:
    image_type = ds.get("ImageType") or []
    tokens = [str(v).upper() for v in ([image_type] if isinstance(image_type, str)
                                       else image_type)]
    if any(t in ("FIELD_MAP", "FIELDMAP", "B0MAP", "B0_MAP") for t in tokens):
        return "fmap"
    component = str(ds.get("ComplexImageComponent", "") or "").upper()
    if component in _KINDS:
        return _KINDS[component]
    philips = str(_private(ds, 0x2005, 0x1011) or "").strip().upper()
    if philips in _KINDS:
        return _KINDS[philips]
    for token in tokens[2:4]:  # Siemens ORIGINAL\PRIMARY\P\ND, Philips ...\M_FFE\M\FFE
        if token in ("M", "P", "R", "I"):
            return _KINDS[token]
    for token in tokens:
        if token in ("PHASE", "REAL", "IMAGINARY", "MAGNITUDE"):
            return _KINDS[token]
    ge = _number(_private(ds, 0x0043, 0x102F))
    maker = str(ds.get("Manufacturer", "") or "").upper()
    if ge in _GE_KINDS and maker.startswith("GE"):
        return _GE_KINDS[ge]
    return None


def image_names(keys: list[tuple]) -> dict[tuple, str]:
    """The name of each distinct image key of a series: ``""`` when there is one image, else
    ``e<echo>`` where echoes differ, the kind (``mag``, ``ph``, ``real``, ``imag``,
    ``fmap``) where kinds differ and the polarity (``fwd``, ``rev``) where polarities
    differ, joined by ``_`` (``e2_ph``)."""
    distinct = sorted(set(keys), key=lambda k: tuple(
        (v is None, v if v is not None else 0)
        for v in (k[0], k[1], str(k[2] or ""), str(_polarity(k) or ""))))
    if len(distinct) <= 1:
        return {k: "" for k in distinct}
    echoes = {(k[0], k[1]) for k in distinct}
    numbers = {k[0] for k in distinct}
    by_number = len({(k[0],) for k in distinct if k[0] is not None}) == len(echoes) and \
        None not in numbers
    times = sorted({k[1] for k in distinct if k[1] is not None})
    kinds = {k[2] for k in distinct}
    names = {}
    for key in distinct:
        parts = []
        if len(echoes) > 1:
            n = key[0] if by_number else (times.index(key[1]) + 1 if key[1] in times else 0)
            parts.append(f"e{n}")
        if len(kinds) > 1:
            parts.append(key[2] or "mag")
        if len({_polarity(k) for k in distinct}) > 1:
            parts.append(_polarity(key) or "fwd")
        names[key] = "_".join(parts)
    if len(set(names.values())) != len(names):  # echoes told apart by neither: number all
        names = {key: f"{names[key]}_{i + 1}".lstrip("_") for i, key in enumerate(distinct)}
    return names


def _polarity(key: tuple) -> str | None:
    return key[3] if len(key) > 3 else None


def split_images(frames: list[Frame]) -> dict[str, list[Frame]]:
    """A series' frames by image (see :func:`image_names`), in name order."""
    names = image_names([f.image for f in frames])
    images: dict[str, list[Frame]] = {}
    for f in frames:
        images.setdefault(names[f.image], []).append(f)
    return dict(sorted(images.items()))


def frame_labels(ds: Dataset, group: Dataset) -> dict[str, Any]:
    """Volume labels of one frame of an enhanced multi-frame image (its per-frame group)."""
    labels: dict[str, Any] = {}
    content = group.get("FrameContentSequence")
    item = content[0] if content else Dataset()
    for key in ("TemporalPositionIndex", "StackID"):
        value = _number(item.get(key))
        if value is not None:
            labels[key] = value
    values = item.get("DimensionIndexValues")
    if values is not None:
        values = [values] if isinstance(values, int) else list(values)
        skip = _in_stack_dimensions(ds)
        kept = tuple(int(v) for i, v in enumerate(values) if i not in skip)
        if kept:
            labels["DimensionIndexValues"] = kept
    for sequence, key in (("MRDiffusionSequence", "DiffusionBValue"),
                          ("MREchoSequence", "EffectiveEchoTime")):
        macro = group.get(sequence) or _shared(ds, sequence)
        if macro and (value := _number(macro[0].get(key))) is not None:
            labels[key] = value
    diffusion = group.get("MRDiffusionSequence") or _shared(ds, "MRDiffusionSequence")
    if diffusion and "DiffusionGradientDirectionSequence" in diffusion[0]:
        direction = diffusion[0].DiffusionGradientDirectionSequence[0]
        if (vec := _vector(direction.get("DiffusionGradientOrientation") or ())) is not None:
            labels["DiffusionGradientOrientation"] = vec
    return labels


def _shared(ds: Dataset, keyword: str) -> Any:
    shared = ds.get("SharedFunctionalGroupsSequence")
    return shared[0].get(keyword) if shared else None


def _in_stack_dimensions(ds: Dataset) -> set[int]:
    """Positions in DimensionIndexValues that index the slice within a stack."""
    skip = set()
    for i, item in enumerate(ds.get("DimensionIndexSequence") or []):
        pointer = item.get("DimensionIndexPointer")
        if pointer is not None and int(pointer) in (0x00209057, 0x00200032):
            skip.add(i)
    return skip


# ----------------------------------------------------------------------------------- grouping
def _place_key(frame: Frame) -> tuple[int, ...]:
    """Slice position and orientation, rounded: equal keys mean the same place."""
    pos = np.rint(frame.position / _POSITION_MM).astype(int)
    ori = np.rint(frame.orientation * 1e4).astype(int)
    return (*pos.tolist(), *ori.tolist())


def _distinct(frames: list[Frame]) -> bool:
    keys = [_place_key(f) for f in frames]
    orientations = {k[3:] for k in keys}
    return len(set(keys)) == len(keys) and len(orientations) == 1


@dataclass
class Volume:
    """The frames of one volume and the labels that set it apart."""

    frames: list[Frame]
    labels: dict[str, Any]


def split_volumes(frames: list[Frame]) -> list[Volume]:
    """Group a series' frames into volumes, in acquisition order.

    A series whose frames all lie at distinct places with one orientation is one volume.
    Otherwise the first label (or combination) that splits the frames into volumes covering
    the same places wins; failing that, frames are grouped by acquisition order
    (:func:`_by_acquisition_order`).

    Raises:
        MedsrError: positions repeat (or orientations differ) and neither a label nor the
            acquisition order tells the volumes apart.
    """
    if len(frames) < 2 or _distinct(frames):
        return [Volume(frames, {})]
    if any("DiffusionBValue" in f.labels for f in frames):  # b0 images without the tags
        for f in frames:
            if "DiffusionBValue" not in f.labels:
                f.labels = {**f.labels, "DiffusionBValue": 0,
                            "DiffusionGradientOrientation": (0.0, 0.0, 0.0)}
    varying = [key for key in LABEL_KEYS
               if all(key in f.labels for f in frames)
               and len({_hashable(f.labels[key]) for f in frames}) > 1]
    fallback = None
    for size in range(1, min(len(varying), 3) + 1):
        for keys in itertools.combinations(varying, size):
            groups = _group(frames, keys)
            if groups is None:
                continue
            places = {frozenset(_place_key(f) for f in g.frames) for g in groups}
            if len(places) == 1:
                return _add_labels(groups, varying)
            fallback = fallback or groups
    ordered = _by_acquisition_order(frames)
    if ordered is not None:
        return _add_labels(ordered, varying)
    if fallback is not None:
        return _add_labels(fallback, varying)
    return _refuse(frames, varying)


def _by_acquisition_order(frames: list[Frame]) -> list[Volume] | None:
    """Volumes of frames that repeat places with no label to tell them apart (GE fMRI and
    DWI, Toshiba, ...): in acquisition order (InstanceNumber, then frame number), the n-th
    frame at each place belongs to volume n. None unless every place is seen equally often,
    with one orientation, and no two frames at a place share their acquisition order."""
    if len({_place_key(f)[3:] for f in frames}) != 1:
        return None
    by_place: dict[tuple, list[Frame]] = {}
    for f in sorted(frames, key=lambda f: f.order):
        by_place.setdefault(_place_key(f), []).append(f)
    counts = {len(group) for group in by_place.values()}
    if len(counts) != 1 or counts == {1}:
        return None
    for group in by_place.values():
        if len({f.order for f in group}) != len(group):
            return None  # copies of one image: nothing orders them
    count = counts.pop()
    volumes = [Volume([group[n] for group in by_place.values()], {}) for n in range(count)]
    return volumes


#: b-values up to this are b=0 images (UIH stores 1.25 s/mm² for its b=0 volume)
B0_MAX = 50.0


def drop_derived(volumes: list[Volume], name: str) -> list[Volume]:
    """Leave out derived trace/ADC volumes of a DWI series (Philips' isotropic image, a
    TRACEW or ADC image type, or a b > 0 volume without a direction among directional ones),
    with one line, as dcm2niix does; other series are returned as they are."""
    if len(volumes) < 2:
        return volumes
    directional = [v for v in volumes if _direction(v) not in (None, (0.0, 0.0, 0.0))]
    derived = [v for v in volumes
               if any(f.labels.get("DerivedDiffusion") for f in v.frames)
               or (directional and (v.labels.get("DiffusionBValue") or 0) > B0_MAX
                   and _direction(v) in (None, (0.0, 0.0, 0.0)))]
    if not derived or len(derived) == len(volumes) or not directional:
        return volumes
    log.warning("%s: left out %d derived diffusion volume%s (trace/ADC: %s) of the DWI series",
                name, len(derived), "s" if len(derived) > 1 else "",
                ", ".join(f"b={v.labels.get('DiffusionBValue', '?')}" for v in derived))
    return [v for v in volumes if not any(v is d for d in derived)]


def _direction(volume: Volume) -> tuple | None:
    value = volume.labels.get("DiffusionGradientOrientation")
    if value is None:
        return None
    return tuple(0.0 if abs(float(v)) < 1e-6 else float(v) for v in value)


def _add_labels(volumes: list[Volume], varying: list[str]) -> list[Volume]:
    """Add the other labels that are constant within each volume (b-value next to
    AcquisitionNumber, ...), in :data:`LABEL_KEYS` order."""
    for key in varying:
        values = [{_hashable(f.labels[key]) for f in v.frames} for v in volumes]
        if all(len(vals) == 1 for vals in values):
            for v, vals in zip(volumes, values):
                v.labels.setdefault(key, _jsonable(next(iter(vals))))
    for v in volumes:
        v.labels = {k: v.labels[k] for k in LABEL_KEYS if k in v.labels}
    return volumes


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _group(frames: list[Frame], keys: tuple[str, ...]) -> list[Volume] | None:
    """Frames grouped by ``keys``; None unless every group is a proper set of slices."""
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        groups.setdefault(tuple(_hashable(f.labels[k]) for k in keys), []).append(f)
    if any(len(g) < 2 or not _distinct(g) for g in groups.values()):
        return None
    if any(k in _UNORDERED for k in keys):
        ordered = sorted(groups.items(), key=lambda item: min(f.order for f in item[1]))
    else:
        ordered = sorted(groups.items(), key=lambda item: item[0])
    return [Volume(g, {k: _jsonable(v) for k, v in zip(keys, value)}) for value, g in ordered]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _refuse(frames: list[Frame], varying: list[str]) -> list[Volume]:
    keys = [_place_key(f) for f in frames]
    seen: dict[tuple, Frame] = {}
    for f, key in zip(frames, keys):
        if key in seen:
            other = seen[key]
            tried = ", ".join(varying) if varying else "none of " + ", ".join(LABEL_KEYS[:7])
            raise MedsrError(f"duplicate slice position: {other.name} and {f.name} lie at the "
                             "same place and no header tells their volumes apart (labels that "
                             f"vary: {tried})")
        seen[key] = f
    first = frames[0]
    odd = next(f for f in frames if _place_key(f)[3:] != _place_key(first)[3:])
    raise MedsrError(f"{odd.name} and {first.name} have different ImageOrientationPatient; "
                     "a volume needs one orientation (localizer in the series?)")


def describe_volumes(labels: list[dict[str, Any]]) -> str:
    """``"4 volumes (TemporalPositionIdentifier 1..4)"``-style summary of per-volume labels."""
    count = len(labels)
    noun = f"{count} volume{'s' if count != 1 else ''}"
    keys = [k for k in LABEL_KEYS if labels and all(k in item for item in labels)]
    parts = []
    for key in keys:
        values = [item[key] for item in labels]
        numbers = all(isinstance(v, int) for v in values)
        if numbers and values == list(range(values[0], values[0] + count)) and count > 2:
            parts.append(f"{key} {values[0]}..{values[-1]}")
        else:
            shown = sorted(set(map(_hashable, values)), key=str) if not numbers else \
                sorted(set(values))
            text = ", ".join(_short(v) for v in shown[:8]) + (", ..." if len(shown) > 8 else "")
            parts.append(f"{key} {text}")
    return f"{noun} ({'; '.join(parts)})" if parts else noun


def _short(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)
