"""The volume contract shared by every reader and writer.

A volume is a MONAI ``MetaTensor`` of shape ``(1, X, Y, Z)`` (channel first, float32) whose
``meta["affine"]`` maps stored voxel indices ``(i, j, k)`` to RAS+ millimetres, as nibabel and
MONAI do. A 4D input (fMRI time points, DWI b-values, echoes, ...) is ``(T, X, Y, Z)``: the
channel is the volume index and all ``T`` volumes share the affine; per-volume labels, when
known, are in ``SourceInfo.extra["frames"]`` (one small dict per volume). Arrays are never
reoriented: axis ``n`` of the tensor is axis ``n`` of the file.
``meta["medsr_source"]`` is a :class:`SourceInfo` carrying what a writer needs to keep the rest
of the source header (NIfTI header, DICOM template dataset, ITK metadata) and its dtype.

Readers make a :class:`Frames` (the array, affine, source info and ``medsr_*`` keys, no torch)
and writers take one or a MetaTensor; :func:`as_metatensor` is where torch and MONAI load, so
commands that never need a MetaTensor (``medsr info``, interpolation) start quickly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medsr.scratch import is_scratch

if TYPE_CHECKING:
    import torch
    from monai.data import MetaTensor

SOURCE_KEY = "medsr_source"


@dataclass
class SourceInfo:
    """Where a volume came from and how it was stored.

    Attributes:
        format: ``"nifti"``, ``"dicom"`` or ``"itk"`` (NRRD, MHA, MHD, ...).
        path: the file or folder read.
        dtype: numpy dtype name of the stored intensities (for DICOM, after rescale slope and
            intercept: HU for CT). Writers cast to it unless told otherwise.
        modality: ``"CT"``, ``"MR"`` or ``None`` when unknown.
        header: format-specific header to carry over (nibabel header, pydicom ``Dataset``
            without pixel data, or a ``dict`` of ITK metadata).
        extra: anything else a writer may use (e.g. ``{"nifti_scaled": True}``).
    """

    format: str
    path: str
    dtype: str
    modality: str | None = None
    header: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def made_by(self) -> str | None:
        """The note a medsr writer stored in this file (see :func:`processing_note`: version,
        method, consistency), or ``None`` when medsr did not make it."""
        header = self.header
        if header is None:
            return None
        if self.format == "dicom":
            note = str(header.get("DerivationDescription", "") or "")
            note = note.removeprefix("super-resolved by ")
        elif self.format == "itk":
            note = str(header.get("medsr", "") or "")
        elif self.format == "nifti":
            texts = [bytes(header["descrip"].item()).decode("ascii", "replace")]
            texts += [e.get_content().decode("utf-8", "replace") for e in header.extensions
                      if e.get_code() == 6]  # comment extensions
            note = next((t.strip("\x00 ") for t in reversed(texts)
                         if t.startswith("medsr ")), "")
        else:
            return None
        return note if note.startswith("medsr ") else None

    def lossy_compression(self) -> str | None:
        """How a DICOM source says it was lossily compressed before (LossyImageCompression
        "01"), e.g. ``"ratio 339:1, ISO_15444_1"``; ``None`` when it does not say so."""
        if not self._lossy():
            return None
        ratios = self._ratios()
        parts = ([f"ratio {':1, '.join(f'{r:.0f}' for r in ratios)}:1"] if ratios else []) \
            + self._header_values("LossyImageCompressionMethod")
        return ", ".join(parts) or "no ratio given"

    def lossy_ratio(self) -> float | None:
        """The largest LossyImageCompressionRatio of a lossily compressed DICOM source (one per
        compression step); ``None`` when it says no ratio or no lossy compression."""
        ratios = self._ratios() if self._lossy() else []
        return max(ratios) if ratios else None

    def _ratios(self) -> list[float]:
        """LossyImageCompressionRatio's values; a malformed one (not a number) is left out."""
        ratios = []
        for value in self._header_values("LossyImageCompressionRatio"):
            try:
                ratios.append(float(value))
            except ValueError:
                continue
        return ratios

    def _lossy(self) -> bool:
        return self.format == "dicom" and self.header is not None and str(
            self.header.get("LossyImageCompression", "") or "").strip() == "01"

    def _header_values(self, keyword: str) -> list[str]:
        value = self.header.get(keyword)
        if value is None or value == "":
            return []
        items = [value] if isinstance(value, str | int | float) else list(value)  # MultiValue
        return [str(v).strip() for v in items if str(v).strip()]

    def __deepcopy__(self, memo: dict) -> SourceInfo:
        # Headers are treated as immutable by medsr: share them instead of copying per op.
        return SourceInfo(self.format, self.path, self.dtype, self.modality, self.header,
                          copy.deepcopy(self.extra, memo))


@dataclass
class Frames:
    """A volume without torch: what the readers make and the writers take.

    Attributes:
        array: ``(T, X, Y, Z)`` float32 (``T == 1`` for a 3D volume).
        affine: 4×4 RAS voxel-to-world affine shared by all volumes.
        source: where the volume came from.
        meta: what medsr made it with (the ``medsr_*`` keys of a result's ``meta``).
    """

    array: np.ndarray
    affine: np.ndarray
    source: SourceInfo
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def make_frames(array: np.ndarray, affine: np.ndarray, source: SourceInfo) -> Frames:
    """Check an ``(X, Y, Z)`` or ``(T, X, Y, Z)`` array and make it float32 :class:`Frames`.

    A disk-backed float32 output (:mod:`medsr.scratch`) is kept as it lies, never copied.
    """
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"expected an (X, Y, Z) or (T, X, Y, Z) array, got shape {array.shape}")
    if not (is_scratch(array) and array.dtype == np.float32):
        array = np.ascontiguousarray(array, dtype=np.float32)
    return Frames(array, np.asarray(affine, dtype=np.float64), source)


def as_metatensor(frames: Frames, original_affine: np.ndarray | None = None) -> MetaTensor:
    """The channel-first float32 ``MetaTensor`` of ``frames`` (shares its memory); its
    ``meta`` holds the source info and ``frames.meta``. Torch and MONAI load here."""
    import torch
    from monai.data.meta_tensor import MetaTensor

    affine_t = torch.as_tensor(frames.affine)
    meta = {
        "original_affine": torch.as_tensor(frames.affine if original_affine is None
                                           else np.asarray(original_affine)).clone(),
        "spatial_shape": np.asarray(frames.array.shape[1:]),
        "original_channel_dim": "no_channel",
        "space": "RAS",
        "filename_or_obj": frames.source.path,
        SOURCE_KEY: frames.source,
        **frames.meta,
    }
    return MetaTensor(torch.from_numpy(frames.array), affine=affine_t, meta=meta)


def make_volume(array: np.ndarray, affine: np.ndarray, source: SourceInfo) -> MetaTensor:
    """Wrap an array and its RAS affine into a channel-first ``MetaTensor``.

    Args:
        array: ``(X, Y, Z)`` for one volume, or channel-first ``(T, X, Y, Z)`` for ``T``
            volumes on the same grid.
        affine: 4×4 RAS voxel-to-world affine shared by all volumes.
        source: where the volume came from.

    Returns:
        A ``(1, X, Y, Z)`` or ``(T, X, Y, Z)`` float32 MetaTensor.
    """
    return as_metatensor(make_frames(array, affine, source))


def volume_parts(volume: Frames | torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    """Split a 3D volume into its ``(X, Y, Z)`` float32 array, 4×4 RAS affine and source info.

    Accepts :class:`Frames` or a ``MetaTensor`` of shape ``(1, X, Y, Z)`` or ``(X, Y, Z)``; a
    4D volume ``(T, X, Y, Z)`` with ``T > 1`` raises ``ValueError`` (use :func:`volume_frames`).
    """
    data, affine, source = _split(volume)
    if data.ndim == 4:
        if data.shape[0] != 1:
            raise ValueError(f"this is a 4D volume of {data.shape[0]} volumes "
                             f"{tuple(data.shape)}; use volume_frames")
        data = data[0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {tuple(data.shape)}")
    return data, affine, source


def volume_frames(volume: Frames | torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    """Split a 3D or 4D volume into its ``(T, X, Y, Z)`` float32 array, RAS affine and source.

    A 3D volume ``(1, X, Y, Z)`` or ``(X, Y, Z)`` gives ``T == 1``.
    """
    data, affine, source = _split(volume)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"expected a 3D or 4D volume, got shape {tuple(data.shape)}")
    return data, affine, source


def _split(volume: Frames | torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    if isinstance(volume, Frames):
        return volume.array, volume.affine, volume.source
    from monai.data.meta_tensor import MetaTensor

    if not isinstance(volume, MetaTensor):
        raise TypeError("expected a MetaTensor with an affine (use medsr.load_volume)")
    data = volume.detach().cpu().numpy()
    affine = np.asarray(volume.affine, dtype=np.float64)
    source = volume.meta.get(SOURCE_KEY)
    if source is None:
        source = SourceInfo(format="array", path=str(volume.meta.get("filename_or_obj", "")),
                            dtype="float32")
    return data.astype(np.float32, copy=False), affine, source


def processing_note(volume: Frames | torch.Tensor) -> str | None:
    """One line on what made this volume (method, slice profile, consistency figure) for a
    writer to store (NIfTI descrip, DICOM DerivationDescription, an NRRD/MHA key); None when
    medsr did not make it."""
    meta = getattr(volume, "meta", {}) or {}
    method = meta.get("medsr_method")
    if method is None:
        return None
    from medsr import __version__

    parts = [f"medsr {__version__} {method}"]
    profile = meta.get("medsr_slice_profile")
    if profile:
        parts.append(f"{profile['kind']} {float(profile['width']):.2f}x")
    psnr = meta.get("medsr_consistency_psnr")
    if psnr is not None:
        psnr = float(psnr)
        parts.append("re-degraded=input" if psnr == float("inf") else f"re-degraded {psnr:.1f} dB")
    fused = meta.get("medsr_fuse") or {}
    for stack in fused.get("stacks", []):
        reg = stack.get("registration") or {}
        parts.append(f"{stack['name']} " + (
            "left out" if stack.get("left_out") else "reference" if reg.get("reference")
            else f"{reg['rotation_deg']:.2f}deg {reg['shift_mm']:.2f}mm" if "rotation_deg" in reg
            else "as in its header"))
    fitted = meta.get("medsr_self_supervised") or {}
    if "steps" in fitted:
        gain = fitted.get("held_out_gain_db")
        parts.append(f"{fitted['steps']} steps" + (f", held-out {float(gain):+.2f} dB vs bspline"
                                                   if gain is not None else ""))
    check = meta.get("medsr_selfcheck")
    if check:
        parts.append(f"{check.get('method', 'learned')} in-plane check "
                     f"{float(check['learned_psnr']):.1f} dB (B-spline "
                     f"{float(check['bspline_psnr']):.1f})")
    return "; ".join(parts)
