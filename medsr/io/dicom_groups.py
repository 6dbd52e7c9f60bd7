"""Split the frames of one DICOM series into volumes (time points, b-values, echoes, stacks).

A series whose frames repeat slice positions (fMRI, DWI, multi-echo, one Siemens mosaic per
time point, enhanced multi-frame with several stacks or dimensions) holds several volumes. Each
frame carries ``labels`` read from its header (TemporalPositionIdentifier, AcquisitionNumber,
b-value, EchoNumbers, StackID, ...); the frames are grouped by the first label, or combination
of labels, that splits them into volumes covering the same slice positions. Frames that repeat
positions with nothing to tell them apart are refused.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsr.errors import MedsrError

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
        b_vector: the matching gradient direction.
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
    labels_b = b_std if b_std is not None else _number(b_value)
    if labels_b is not None:
        labels["DiffusionBValue"] = labels_b
    direction = _vector(item.get("DiffusionGradientOrientation") or ()) if b_std is not None \
        else (_vector(b_vector) if b_vector is not None else None)
    if direction is not None:
        labels["DiffusionGradientOrientation"] = direction
    return labels


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

    Raises:
        MedsrError: positions repeat (or orientations differ) and no label tells the volumes
            apart.
    """
    if len(frames) < 2 or _distinct(frames):
        return [Volume(frames, {})]
    varying = [key for key in LABEL_KEYS
               if all(key in f.labels for f in frames)
               and len({_hashable(f.labels[key]) for f in frames}) > 1]
    fallback = None
    for size in range(1, len(varying) + 1):
        for keys in itertools.combinations(varying, size):
            groups = _group(frames, keys)
            if groups is None:
                continue
            places = {frozenset(_place_key(f) for f in g.frames) for g in groups}
            if len(places) == 1:
                return _add_labels(groups, varying)
            fallback = fallback or groups
    if fallback is not None:
        return _add_labels(fallback, varying)
    return _refuse(frames, varying)


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
