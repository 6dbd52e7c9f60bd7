"""The Python API that the CLI wraps: ``upscale``, ``load_volume``, ``save_volume``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medsr.errors import MedsrError
from medsr.geometry import target_grid
from medsr.io import load_volume, make_volume, volume_parts
from medsr.resample import INTERPOLATORS, resample_index_space

logger = logging.getLogger(__name__)

METHODS = tuple(INTERPOLATORS)


def upscale(volume: str | Path | MetaTensor, scale: Sequence[int] | None = None, *,
            spacing: Sequence[float] | None = None, method: str = "bspline",
            model: str | Path | None = None, device: str = "auto",
            series_uid: str | None = None,
            progress: Callable[[float], None] | None = None) -> MetaTensor:
    """Upscale a volume onto a finer grid covering the same physical extent.

    Args:
        volume: a path (NIfTI, DICOM folder, NRRD, ...) or a MetaTensor ``(1, X, Y, Z)`` or
            ``(X, Y, Z)`` with an affine.
        scale: integer factor per stored array axis, e.g. ``(1, 1, 4)`` for 4× thinner slices.
            Default: every spacing brought down to the smallest by an integer factor.
        spacing: target spacing in mm per array axis instead of ``scale``.
        method: ``"bspline"`` (cubic) or ``"linear"``; ignored when ``model`` is given.
        model: a trained model folder (``weights.safetensors`` + ``card.json``) or its
            ``.safetensors`` file. Without ``scale`` the thickest axis is upscaled by the
            model's factor.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"`` for models.
        series_uid: DICOM series to read when ``volume`` is a folder with several.
        progress: optional callback receiving the fraction done.

    Returns:
        A MetaTensor ``(1, X', Y', Z')`` whose affine follows :mod:`medsr.geometry`'s
        subdivision convention; its source info is kept, so :func:`save_volume` writes the
        same format and dtype as the input.

    Example:
        >>> from medsr import upscale, save_volume
        >>> sr = upscale("scan.nii.gz", scale=(1, 1, 3))          # doctest: +SKIP
        >>> save_volume(sr, "scan_sr.nii.gz")                      # doctest: +SKIP
    """
    if not isinstance(volume, MetaTensor):
        volume = load_volume(volume, series_uid=series_uid)
    array, affine, source = volume_parts(volume)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise MedsrError(f"{source.path or 'input'} has {bad} NaN/Inf voxels; "
                         "replace them before upscaling")
    if model is not None:
        return _upscale_with_model(array, affine, source, scale, spacing, model, device,
                                   progress)
    out_shape, out_affine, _ = target_grid(array.shape, affine, scale=scale,
                                           target_spacing=spacing)
    # index map from output voxels to source voxels (axis-aligned by construction)
    to_source = np.linalg.solve(affine, out_affine)
    ratio, offset = np.diag(to_source)[:3], to_source[:3, 3]
    logger.info("upscaling %s -> %s with %s", array.shape, out_shape, method)
    out = resample_index_space(array, out_shape, ratio, offset, method, progress)
    result = make_volume(out, out_affine, source)
    result.meta["original_affine"] = torch.as_tensor(affine)
    return result


def _upscale_with_model(array, affine, source, scale, spacing, model, device, progress):
    from medsr.checkpoint import load_model
    from medsr.geometry import spacing as voxel_size
    from medsr.inference import factor_range, upscale_with_model
    from medsr.training.loop import resolve_device

    if spacing is not None:
        raise MedsrError("--spacing cannot be used with a model; use --scale")
    dev = resolve_device(device)
    net, card = load_model(model, dev)
    if scale is None:
        factors = [1, 1, 1]
        d = voxel_size(affine)
        lo, hi = factor_range(card)
        factors[int(np.argmax(d))] = int(np.clip(round(d.max() / d.min()), lo, hi))
        scale = factors
    out_shape, out_affine, _ = target_grid(array.shape, affine, scale=scale)
    out = upscale_with_model(array, [int(s) for s in scale], net, card, device=dev,
                             progress=progress)
    assert out.shape == tuple(out_shape)
    result = make_volume(out, out_affine, source)
    result.meta["original_affine"] = torch.as_tensor(affine)
    return result
