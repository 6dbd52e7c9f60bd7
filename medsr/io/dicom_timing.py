"""Slice times that no standard tag holds: GE's protocol data block, enhanced (multi-frame)
DICOM frame times and the protocol of old Siemens mosaics, as dcm2niix reads them for the
JSON sidecar's SliceTiming.

GE writes no per-slice time that dcm2niix trusts (TriggerTime and the RTIA timer are often
wrong for multiband); dcm2niix computes the times from the acquisition's prescription, kept in
GE's private *protocol data block* (0025,101B): a 4-byte little-endian length, then a gzip
stream of ``KEY "value"`` text lines. Only four keys are read here:

- ``SLICEORDER``: 0 sequential, anything else interleaved (absent: interleaved),
- ``MBACCEL``: the multiband (HyperBand) factor (absent: 1),
- ``IOPT``: imaging options; ``DIFF`` marks diffusion (no slice times), ``MPhVar``
  multi-phase EPI with variable delays (no slice times),
- the software release (SoftwareVersions (0018,1020), ``DV28.0_R02`` style) decides how the
  excitations of a multiband acquisition are counted (before 27.0 R03 an even count gets
  one more; before 26.0 multiband has no known times).

Excitation ``i`` of ``n = ceil(slices / mb)`` starts at ``i * TR / n`` (sequential) or, for
interleaved order, the even excitations first then the odd ones (27.0 R03 and later swap the
last and third-last of an even count); slice ``k`` (in the prescription's order, GE's
InstanceNumber order within a volume) belongs to excitation ``k mod n``.

Enhanced multi-frame files carry each frame's FrameAcquisitionDateTime (0018,9074) in its
FrameContentSequence (Siemens XA also TimeAfterStart (0021,1104), which dcm2niix prefers):
a slice's time is its frame's, less the volume's first. Siemens mosaics without
MosaicRefAcqTimes (VB12, VB13) get evenly spread times in the order their protocol names.
"""

from __future__ import annotations

import gzip
import logging
import math
import re
import struct
from typing import Any

from pydicom.dataset import Dataset

log = logging.getLogger(__name__)


def ge_protocol(ds: Dataset) -> dict[str, str] | None:
    """The ``KEY "value"`` lines of GE's protocol data block (0025,101B); None without one
    (or when it cannot be unpacked)."""
    elem = ds.get((0x0025, 0x101B))
    raw = elem.value if elem is not None else None
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 24:
        return None
    (length,) = struct.unpack("<I", raw[:4])
    stream = bytes(raw[4:4 + length]) if 0 < length <= len(raw) - 4 else bytes(raw[4:])
    if stream[:3] != b"\x1f\x8b\x08":
        return None
    try:
        text = gzip.decompress(stream).decode("latin-1")
    except (OSError, EOFError, ValueError):
        return None
    return {m.group(1): m.group(2) for m in re.finditer(r'^(\w+)\s+"([^"\n]*)"', text, re.M)}


def ge_version(ds: Dataset) -> tuple[float, bool]:
    """GE software major.minor (``DV28.0_R02_1947.a`` -> 28.0) and whether it is 27.0 R03 or
    later; (0.0, False) when SoftwareVersions (0018,1020) does not say."""
    value = ds.get("SoftwareVersions") or ""
    text = value if isinstance(value, str) else "\\".join(str(v) for v in value)
    match = re.search(r"[A-Z]{2}(\d+)\.(\d+)_(EA|R(\d+))", text)
    if match is None:
        return 0.0, False
    major, minor = int(match.group(1)), int(match.group(2))
    release = int(match.group(4)) if match.group(4) else 0
    version = major + 0.1 * minor
    return version, version >= 27.1 or (major == 27 and release >= 3)


def _is_ge(ds: Dataset) -> bool:
    return str(ds.get("Manufacturer", "") or "").upper().startswith("GE")


def ge_excitation_times(count: int, tr_s: float, multiband: int, interleaved: bool,
                        version: float, is27r3: bool) -> list[float] | None:
    """Start time (s) of each of ``count`` slices, in prescription order, from GE's slice
    order and multiband factor (see the module's docstring); None where unknown."""
    multiband = max(1, multiband)
    if multiband > 1 and version < 26.0:
        return None
    shots = math.ceil(count / multiband)
    if multiband > 1 and not is27r3 and shots % 2 == 0:
        shots += 1
    step = tr_s / shots
    if interleaved:
        first_odd = (shots - 1) // 2
        slots = [i // 2 if i % 2 == 0 else first_odd + (i + 1) // 2 for i in range(shots)]
        if multiband > 1 and is27r3 and shots > 2 and shots % 2 == 0:
            slots[-1], slots[-3] = slots[-3], slots[-1]
    else:
        slots = list(range(shots))
    return [round(slots[k % shots] * step, 6) for k in range(count)]


def ge_slice_times(datasets: list[Dataset], volumes: int) -> list[float] | None:
    """Slice times (s) of a GE EPI volume whose slices have these datasets, in prescription
    (InstanceNumber) order, from the protocol data block; None for other series, a single
    volume, 3D, diffusion, or a block that does not tell."""
    ds = datasets[0]
    if not _is_ge(ds) or volumes < 2 or len(datasets) < 2 or \
            str(ds.get("MRAcquisitionType", "") or "").upper() == "3D":
        return None
    protocol = ge_protocol(ds)
    if protocol is None:
        return None
    options = protocol.get("IOPT", "")
    kind = ge_epi_kind(ds)
    if kind not in ("pepolar", "rt") and "FMRI" not in options and (
            kind != "multiphase" and "MPh" not in options or "MPhVar" in options):
        return None  # diffusion, multi-phase with variable delays, not EPI: dcm2niix gives none
    tr = float(ds.get("RepetitionTime") or 0.0) / 1000.0
    if tr <= 0:
        return None
    order = _int(protocol.get("SLICEORDER"), -1)
    version, is27r3 = ge_version(ds)
    return ge_excitation_times(len(datasets), tr, _int(protocol.get("MBACCEL"), 1),
                               order != 0, version, is27r3)


def ge_epi_kind(ds: Dataset) -> str | None:
    """GE EPI flavour, as dcm2niix tells it: ``"pepolar"``, ``"rt"`` (epiRT, or a group delay
    (0043,107C) present), ``"multiphase"`` (epi), ``"diffusion"`` (epi2), or None (not EPI);
    from PulseSequenceName (0019,109C) and InternalPulseSequenceName (0019,109E)."""
    sequence = str(_private(ds, 0x0019, 0x109C) or "")
    internal = str(_private(ds, 0x0019, 0x109E) or "").strip()
    kind = next((k for text, k in (("epi_pepolar", "pepolar"), ("epi2", "diffusion"),
                                   ("epiRT", "rt"), ("epi", "multiphase")) if text in sequence),
                None)
    if internal == "EPI" and kind != "pepolar" and kind != "rt":
        kind = "multiphase"
    if (0x0043, 0x107C) in ds:
        kind = "rt"
    return kind


def _private(ds: Dataset, group: int, element: int) -> Any:
    elem = ds.get((group, element))
    return None if elem is None else elem.value


def _int(text: Any, default: int) -> int:
    digits = "".join(c for c in str(text or "") if c.isdigit())
    return int(digits) if digits else default


def frame_time(ds: Dataset, group: Dataset) -> float | None:
    """Acquisition time (s) of one frame of an enhanced multi-frame image: Siemens XA's
    TimeAfterStart (0021,1104) in the frame's private group (0021,11FE), which dcm2niix reads
    (de-identification can scramble the standard time), else FrameAcquisitionDateTime
    (0018,9074) of its FrameContentSequence as seconds since midnight."""
    if str(ds.get("Manufacturer", "") or "").upper().startswith("SIEMENS"):
        private = group.get((0x0021, 0x11FE))
        items = private.value if private is not None else None
        if items and (value := _float(_private(items[0], 0x0021, 0x1104))) is not None:
            return value
    content = group.get("FrameContentSequence")
    stamp = str(content[0].get("FrameAcquisitionDateTime", "") or "") if content else ""
    return _clock(stamp[8:]) if len(stamp) >= 14 else None


def siemens_protocol_times(ds: Dataset, count: int) -> list[float] | None:
    """Slice times (s) of a Siemens mosaic without MosaicRefAcqTimes (VB12, VB13), in the
    mosaic's slice order, from its protocol (the ``ASCCONV`` text of the CSA series header
    (0029,1020)): ``sSliceArray.ucMode`` (1 ascending, 2 descending, 4 interleaved) and
    ``lDelayTimeInTR`` (us), slices spread evenly over TR less the delay, as dcm2niix's
    rescue does; None for anything else."""
    image_type = ds.get("ImageType") or []
    if not str(ds.get("Manufacturer", "") or "").upper().startswith("SIEMENS") or \
            "MOSAIC" not in [str(v).upper() for v in image_type] or count < 2:
        return None
    elem = ds.get((0x0029, 0x1020))
    raw = elem.value if elem is not None else None
    if not isinstance(raw, (bytes, bytearray)) or b"### ASCCONV BEGIN" not in raw:
        return None
    text = bytes(raw).split(b"### ASCCONV BEGIN", 1)[1].split(b"### ASCCONV END", 1)[0]
    text = text.decode("latin-1")
    mode = re.search(r"^sSliceArray\.ucMode\s*=\s*(\S+)", text, re.M)
    delay = re.search(r"^lDelayTimeInTR\s*=\s*(\S+)", text, re.M)
    try:
        mode_value = int(mode.group(1), 0) if mode else -1
        delay_s = float(delay.group(1)) / 1e6 if delay else 0.0
    except ValueError:
        return None
    tr = float(ds.get("RepetitionTime") or 0.0) / 1000.0
    if mode_value not in (1, 2, 4) or tr <= 0:
        return None
    base = [i * (tr - delay_s) / count for i in range(count)]
    if mode_value == 1:
        return [round(t, 6) for t in base]
    if mode_value == 2:
        return [round(t, 6) for t in base[::-1]]
    # interleaved: odd count 0, 2, 4, ... first; even count 1, 3, 5, ... first
    first = list(range(0, count, 2)) if count % 2 else list(range(1, count, 2))
    second = list(range(1, count, 2)) if count % 2 else list(range(0, count, 2))
    times = [0.0] * count
    for slot, k in enumerate(first + second):
        times[k] = round(base[slot], 6)
    return times


def early_xa(ds: Dataset) -> bool:
    """Siemens XA10 to XA30 (SoftwareVersions, or ImplementationVersionName ``XA10A``), whose
    first volume's frame times are not to be trusted (dcm2niix takes the second's)."""
    value = ds.get("SoftwareVersions") or ""
    text = value if isinstance(value, str) else "\\".join(str(v) for v in value)
    meta = getattr(ds, "file_meta", None)
    implementation = str(meta.get("ImplementationVersionName", "") or "") if meta else ""
    return any(v in text for v in ("XA10", "XA11", "XA20", "XA30")) or "XA10A" in implementation


def _clock(text: str) -> float | None:
    """HHMMSS.FFFFFF as seconds since midnight."""
    digits = text.split("+")[0].split("-")[0]
    if len(digits) < 6 or not digits[:6].isdigit():
        return None
    try:
        return int(digits[:2]) * 3600 + int(digits[2:4]) * 60 + float(digits[4:])
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
