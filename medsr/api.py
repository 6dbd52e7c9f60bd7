"""The Python API that the CLI wraps: ``upscale``, ``load_volume``, ``save_volume``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medsr.errors import MedsrError
from medsr.geometry import default_factors, parse_factors, target_grid
from medsr.geometry import spacing as voxel_size
from medsr.io import load_volume, make_volume, volume_parts
from medsr.resample import INTERPOLATORS, resample_index_space

logger = logging.getLogger(__name__)

METHODS = ("auto", "default", "self-supervised", *INTERPOLATORS)


def upscale(volume: str | Path | MetaTensor, scale: Sequence[int] | None = None, *,
            spacing: Sequence[float] | None = None, method: str = "auto",
            model: str | Path | None = None, modality: str | None = None,
            device: str = "auto", series_uid: str | None = None,
            progress: Callable[[float], None] | None = None,
            self_supervised: dict | None = None) -> MetaTensor:
    """Upscale a volume onto a finer grid covering the same physical extent.

    Args:
        volume: a path (NIfTI, DICOM folder, NRRD, ...) or a MetaTensor ``(1, X, Y, Z)`` or
            ``(X, Y, Z)`` with an affine.
        scale: integer factor per stored array axis, e.g. ``(1, 1, 4)`` for 4× thinner slices.
            Default: every spacing brought down to the smallest by an integer factor (the
            factor a model serves is clipped to its trained range).
        spacing: target spacing in mm per array axis instead of ``scale`` (interpolation only).
        method: ``"auto"`` (the shipped default model for the modality when it covers the
            request, else B-spline), ``"default"`` (the shipped model, or an error),
            ``"self-supervised"`` (fit a model to the scan's own in-plane slices, see
            :mod:`medsr.selfsup`), ``"bspline"`` (cubic) or ``"linear"``. Ignored when
            ``model`` is given.
        model: a trained model folder (``weights.safetensors`` + ``card.json``) or its
            ``.safetensors`` file.
        modality: ``"CT"`` or ``"MR"`` to choose the default model; default from the DICOM
            header, else guessed from the intensities (air at -1000 HU means CT).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"`` for models.
        series_uid: DICOM series to read when ``volume`` is a folder with several.
        progress: optional callback receiving the fraction done.
        self_supervised: options for ``method="self-supervised"``: ``budget_seconds``,
            ``slice_thickness``, ``seed``, ``init``, ``save_model`` (a folder to keep the
            fitted model in, reusable with ``model=``).

    Returns:
        A MetaTensor ``(1, X', Y', Z')`` whose affine follows :mod:`medsr.geometry`'s
        subdivision convention; ``meta["medsr_method"]`` says what ran. Its source info is
        kept, so :func:`save_volume` writes the same format and dtype as the input.

    Example:
        >>> from medsr import upscale, save_volume
        >>> sr = upscale("scan.nii.gz", scale=(1, 1, 3))          # doctest: +SKIP
        >>> save_volume(sr, "scan_sr.nii.gz")                      # doctest: +SKIP
    """
    if method not in METHODS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(volume, MetaTensor):
        volume = load_volume(volume, series_uid=series_uid)
    array, affine, source = volume_parts(volume)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise MedsrError(f"{source.path or 'input'} has {bad} NaN/Inf voxels; "
                         "replace them before upscaling")
    if model is None and method in ("auto", "default"):
        model, scale = _choose_default(array, affine, source, scale, spacing, method, modality)
        method = "default" if model is not None else "bspline"
    if method == "self-supervised" and model is None:
        out, out_affine = _run_self_supervised(array, affine, source, scale, spacing, modality,
                                               device, progress, self_supervised or {})
    elif model is not None:
        out, out_affine = _run_model(array, affine, scale, spacing, model, device, progress)
        method = method if method == "default" else f"model {model}"
    else:
        out_shape, out_affine, _ = target_grid(array.shape, affine, scale=scale,
                                               target_spacing=spacing)
        # index map from output voxels to source voxels (axis-aligned by construction)
        to_source = np.linalg.solve(affine, out_affine)
        ratio, offset = np.diag(to_source)[:3], to_source[:3, 3]
        logger.info("upscaling %s -> %s with %s", array.shape, out_shape, method)
        out = resample_index_space(array, out_shape, ratio, offset, method, progress)
    result = make_volume(out, out_affine, source)
    result.meta["original_affine"] = torch.as_tensor(affine)
    result.meta["medsr_method"] = method
    return result


def _requested_factors(affine, scale, lo: int, hi: int) -> list[int]:
    """``scale``, or the default factors with the model's range applied to the thick axes."""
    if scale is not None:
        return [int(s) for s in parse_factors(scale)]
    d = voxel_size(affine)
    return [1 if f == 1 else int(np.clip(f, lo, hi)) for f in default_factors(d)]


def _choose_default(array, affine, source, scale, spacing, method, modality):
    """(model folder or None, factors) for ``auto``/``default``."""
    from medsr.checkpoint import model_paths
    from medsr.inference import factor_range
    from medsr.models import default_model
    from medsr.transforms.intensity import guess_modality

    kind = (modality or source.modality or guess_modality(array)).upper()
    if kind not in ("CT", "MR"):
        raise MedsrError(f"unknown modality {modality!r}; use ct or mr")
    folder = default_model(kind)
    why = None
    if folder is None:
        why = f"no default {kind} model is shipped"
    elif spacing is not None:
        why = "--spacing asks for interpolation"
    else:
        import json

        lo, hi = factor_range(json.loads(model_paths(folder)[1].read_text()))
        factors = _requested_factors(affine, scale, lo, hi)
        if all(f == 1 for f in factors):
            why = "nothing to upscale"
        elif any(f != 1 and not lo <= f <= hi for f in factors):
            why = f"the default {kind} model serves factors {lo} to {hi}, not {factors}"
        else:
            return folder, factors
    if method == "default":
        raise MedsrError(f"--method default: {why}")
    logger.info("using B-spline: %s", why)
    return None, scale


def _run_model(array, affine, scale, spacing, model, device, progress):
    from medsr.checkpoint import load_model
    from medsr.inference import factor_range, upscale_with_model
    from medsr.training.loop import resolve_device

    if spacing is not None:
        raise MedsrError("--spacing cannot be used with a model; use --scale")
    dev = resolve_device(device)
    net, card = load_model(model, dev)
    factors = _requested_factors(affine, scale, *factor_range(card))
    out_shape, out_affine, _ = target_grid(array.shape, affine, scale=factors)
    out = upscale_with_model(array, factors, net, card, device=dev, progress=progress,
                             spacing=voxel_size(affine))
    if out.shape != tuple(out_shape):
        raise RuntimeError(f"model output {out.shape} does not match the grid {out_shape}")
    return out, out_affine


def _run_self_supervised(array, affine, source, scale, spacing, modality, device, progress,
                         options):
    from medsr.checkpoint import save_model
    from medsr.inference import upscale_with_model
    from medsr.selfsup import fit_self_supervised, thick_axis_and_factor
    from medsr.training.loop import resolve_device
    from medsr.transforms.intensity import guess_modality

    if spacing is not None:
        raise MedsrError("--spacing cannot be used with self-supervised SR; use --scale")
    options = dict(options)
    save_to = options.pop("save_model", None)
    if options.get("slice_thickness") is None and source.extra.get("slice_thickness"):
        options["slice_thickness"] = float(source.extra["slice_thickness"])
    axis, factor = thick_axis_and_factor(affine, scale)
    kind = (modality or source.modality or guess_modality(array)).upper()
    dev = resolve_device(device)
    fit_progress = (lambda p: progress(0.9 * p)) if progress else None
    net, card = fit_self_supervised(array, affine, axis=axis, factor=factor, modality=kind,
                                    device=str(dev), progress=fit_progress, **options)
    if save_to is not None:
        save_model(net, Path(save_to), card)
    factors = [1, 1, 1]
    factors[axis] = factor
    _, out_affine, _ = target_grid(array.shape, affine, scale=factors)
    apply_progress = (lambda p: progress(0.9 + 0.1 * p)) if progress else None
    out = upscale_with_model(array, factors, net, card, device=dev, progress=apply_progress,
                             spacing=voxel_size(affine))
    return out, out_affine
