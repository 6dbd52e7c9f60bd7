"""The volume contract shared by every reader and writer.

A volume is a MONAI ``MetaTensor`` of shape ``(1, X, Y, Z)`` (channel first, float32) whose
``meta["affine"]`` maps stored voxel indices ``(i, j, k)`` to RAS+ millimetres, as nibabel and
MONAI do. A 4D input (fMRI time points, DWI b-values, echoes, ...) is ``(T, X, Y, Z)``: the
channel is the volume index and all ``T`` volumes share the affine; per-volume labels, when
known, are in ``SourceInfo.extra["frames"]`` (one small dict per volume). Arrays are never reoriented: axis ``n`` of the tensor is axis ``n`` of the file.
``meta["medsr_source"]`` is a :class:`SourceInfo` carrying what a writer needs to keep the rest
of the source header (NIfTI header, DICOM template dataset, ITK metadata) and its dtype.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medsr.scratch import is_scratch

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

    def __deepcopy__(self, memo: dict) -> SourceInfo:
        # Headers are treated as immutable by medsr: share them instead of copying per op.
        return SourceInfo(self.format, self.path, self.dtype, self.modality, self.header,
                          copy.deepcopy(self.extra, memo))


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
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] < 1:
        raise ValueError(f"expected an (X, Y, Z) or (T, X, Y, Z) array, got shape {array.shape}")
    affine_t = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    # a disk-backed output (medsr.scratch) is wrapped as it lies, never copied into memory
    data = torch.from_numpy(array if is_scratch(array) and array.dtype == np.float32
                            else np.ascontiguousarray(array, dtype=np.float32))
    meta = {
        "original_affine": affine_t.clone(),
        "spatial_shape": np.asarray(array.shape[1:]),
        "original_channel_dim": "no_channel",
        "space": "RAS",
        "filename_or_obj": source.path,
        SOURCE_KEY: source,
    }
    return MetaTensor(data, affine=affine_t, meta=meta)


def volume_parts(volume: torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    """Split a 3D volume into its ``(X, Y, Z)`` float32 array, 4×4 RAS affine and source info.

    Accepts a ``MetaTensor`` of shape ``(1, X, Y, Z)`` or ``(X, Y, Z)``; a 4D volume
    ``(T, X, Y, Z)`` with ``T > 1`` raises ``ValueError`` (use :func:`volume_frames`).
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


def volume_frames(volume: torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    """Split a 3D or 4D volume into its ``(T, X, Y, Z)`` float32 array, RAS affine and source.

    A 3D volume ``(1, X, Y, Z)`` or ``(X, Y, Z)`` gives ``T == 1``.
    """
    data, affine, source = _split(volume)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"expected a 3D or 4D volume, got shape {tuple(data.shape)}")
    return data, affine, source


def _split(volume: torch.Tensor) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    if not isinstance(volume, MetaTensor):
        raise TypeError("expected a MetaTensor with an affine (use medsr.load_volume)")
    data = volume.detach().cpu().numpy()
    affine = np.asarray(volume.affine, dtype=np.float64)
    source = volume.meta.get(SOURCE_KEY)
    if source is None:
        source = SourceInfo(format="array", path=str(volume.meta.get("filename_or_obj", "")),
                            dtype="float32")
    return data.astype(np.float32, copy=False), affine, source


def processing_note(volume: torch.Tensor) -> str | None:
    """One line on what made this volume (method, slice profile, consistency figure) for a
    writer to store (NIfTI descrip, DICOM DerivationDescription, an NRRD/MHA key); None when
    medsr did not make it."""
    meta = getattr(volume, "meta", {}) or {}
    method = meta.get("medsr_method")
    if method is None:
        return None
    parts = [f"medsr {method}"]
    profile = meta.get("medsr_slice_profile")
    if profile:
        parts.append(f"{profile['kind']} {float(profile['width']):.2f}x")
    psnr = meta.get("medsr_consistency_psnr")
    if psnr is not None:
        psnr = float(psnr)
        parts.append("re-degraded=input" if psnr == float("inf") else f"re-degraded {psnr:.1f} dB")
    check = meta.get("medsr_selfcheck")
    if check:
        parts.append(f"{check.get('method', 'learned')} in-plane check "
                     f"{float(check['learned_psnr']):.1f} dB (B-spline "
                     f"{float(check['bspline_psnr']):.1f})")
    return "; ".join(parts)
