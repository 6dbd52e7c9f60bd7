"""What a NIfTI output of a DICOM series carries beside it: a JSON sidecar (timing, echo,
scanner; BIDS keys as dcm2niix writes them) and, for diffusion, FSL's ``.bval``/``.bvec``.

b-vectors are written in the output image's own voxel axes, as FSL expects: the gradient
direction (patient LPS axes, as every reader of :mod:`medsr.io.dicom_groups` keeps it) is
turned into RAS, expressed along the output affine's axes, and its first component negated
when the affine's determinant is positive (FSL's radiological voxel convention). Resampling
keeps the axes' directions, so the vectors stay valid for a super-resolved output.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.io.meta import SourceInfo

log = logging.getLogger(__name__)

#: DICOM keyword -> (BIDS key, scale): times in seconds as BIDS wants them
_KEYS = (
    ("Modality", "Modality", None), ("MagneticFieldStrength", "MagneticFieldStrength", None),
    ("Manufacturer", "Manufacturer", None),
    ("ManufacturerModelName", "ManufacturersModelName", None),
    ("SeriesDescription", "SeriesDescription", None), ("ProtocolName", "ProtocolName", None),
    ("SeriesNumber", "SeriesNumber", None), ("ImageType", "ImageType", None),
    ("SliceThickness", "SliceThickness", None),
    ("SpacingBetweenSlices", "SpacingBetweenSlices", None),
    ("EchoTime", "EchoTime", 0.001), ("EchoNumbers", "EchoNumber", None),
    ("RepetitionTime", "RepetitionTime", 0.001), ("InversionTime", "InversionTime", 0.001),
    ("FlipAngle", "FlipAngle", None),
    ("InPlanePhaseEncodingDirection", "InPlanePhaseEncodingDirectionDICOM", None),
    ("PixelBandwidth", "PixelBandwidth", None), ("AcquisitionTime", "AcquisitionTime", None),
)


def dicom_sidecar(source: SourceInfo, shape: tuple[int, ...]) -> dict[str, Any]:
    """The JSON sidecar of an output of ``shape`` ``(T, X, Y, Z)`` read from DICOM ``source``.

    SliceTiming (seconds, in the output's slice order) is kept only while the output has the
    source's slices (not resampled along them)."""
    header = source.header
    out: dict[str, Any] = {}
    for keyword, key, scale in _KEYS:
        value = header.get(keyword) if header is not None else None
        if value is None or value == "":
            continue
        out[key] = _plain(value, scale)
    if image := source.extra.get("image"):
        out["ImageName"] = image
    timing = source.extra.get("slice_timing")
    if timing and len(timing) == shape[-1]:
        out["SliceTiming"] = [round(float(t), 6) for t in timing]
    elif timing:
        out["SliceTimingLeftOut"] = (f"the output has {shape[-1]} slices, the source "
                                     f"{len(timing)}: slice times no longer apply")
    from medsr import __version__

    out["ConversionSoftware"] = "medsr"
    out["ConversionSoftwareVersion"] = __version__
    return out


def _plain(value: Any, scale: float | None) -> Any:
    """A DICOM value as JSON: numbers as numbers (times scaled to seconds), lists as lists."""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        return [_plain(v, scale) for v in value]
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if scale:
        return round(number * scale, 9)
    return int(number) if number.is_integer() and "." not in text else round(number, 6)


def diffusion_tables(labels: list[dict] | None, affine: np.ndarray
                     ) -> tuple[list[float], np.ndarray] | None:
    """FSL's b-values and b-vectors ``(3, T)`` for volumes with these labels on this RAS
    affine; None unless some volume has a b-value above 0."""
    if not labels or not any((v.get("DiffusionBValue") or 0) > 0 for v in labels):
        return None
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = axes / np.linalg.norm(axes, axis=0)
    flip = np.linalg.det(axes) > 0
    bvals, bvecs = [], []
    for item in labels:
        b = float(item.get("DiffusionBValue") or 0.0)
        lps = np.asarray(item.get("DiffusionGradientOrientation") or (0.0, 0.0, 0.0), float)
        vec = np.zeros(3)
        if b > 0 and np.linalg.norm(lps) > 1e-6:
            vec = np.linalg.solve(unit, lps * [-1.0, -1.0, 1.0])
            vec /= np.linalg.norm(vec)
            if flip:
                vec[0] = -vec[0]
        bvals.append(b)
        bvecs.append(vec)
    return bvals, np.array(bvecs).T


def sidecar_paths(nifti: Path) -> dict[str, Path]:
    """``out.nii.gz -> out.json, out.bval, out.bvec``."""
    name = nifti.name
    stem = name[:-7] if name.lower().endswith(".nii.gz") else nifti.stem
    return {ext: nifti.with_name(stem + ext) for ext in (".json", ".bval", ".bvec")}


def write_sidecars(source: SourceInfo, shape: tuple[int, ...], affine: np.ndarray,
                   nifti: Path) -> list[Path]:
    """Write the JSON sidecar (and ``.bval``/``.bvec`` for diffusion) beside a NIfTI output of
    a DICOM source; returns the files written (none for other sources)."""
    if source.format != "dicom":
        return []
    paths = sidecar_paths(nifti)
    written = [_atomic_text(paths[".json"], json.dumps(dicom_sidecar(source, shape),
                                                        indent=2) + "\n")]
    labels = source.extra.get("frames")
    tables = diffusion_tables(labels if isinstance(labels, list) and
                              len(labels) == shape[0] else None, affine)
    if tables is not None:
        bvals, bvecs = tables
        written.append(_atomic_text(paths[".bval"], " ".join(f"{b:g}" for b in bvals) + "\n"))
        written.append(_atomic_text(paths[".bvec"], "\n".join(
            " ".join(f"{v:.6g}" if abs(v) > 5e-7 else "0" for v in row) for row in bvecs)
            + "\n"))
    return written


def _atomic_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.medsr-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
