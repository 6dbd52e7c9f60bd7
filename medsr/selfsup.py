"""Per-scan self-supervised SR: learn from the scan's own high-resolution planes.

The idea of SMORE/ECLARE (Zhao et al. 2020; Remedios et al. 2023), built on medsr's parts: the
in-plane slices of a thick-slice scan are high resolution, so degrading them along one in-plane
axis gives training pairs for the through-plane problem. The pairs must reproduce the request
*in the network's units*, which are voxels: along the degraded in-plane axis the slices are
first resampled to the requested target spacing ``d_thick / f`` (an area average when the
target is coarser than the pixels: the target voxel's own box profile), then degraded by the
factor ``f`` with the thick axis's slice profile expressed in *slice spacings* (FWHM /
``d_thick``). So the LR/HR spacing ratio, the profile width in LR spacings and the target's
own resolution all match the real request, whatever the in-plane pixel size. A 2D residual
refiner (the default model's architecture, starting from its weights when one is shipped for
the modality) is fine-tuned on those pairs within a time budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medsr.consistency import SliceProfile
from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size

logger = logging.getLogger(__name__)

#: architecture used when no default model is shipped for the modality
FALLBACK_NETWORK = {"name": "edsr", "spatial_dims": 2, "scale": [1, 1], "features": 16,
                    "num_blocks": 8}


def fit_self_supervised(array: np.ndarray, affine: np.ndarray, *, axis: int, factor: int,
                        modality: str, profile: SliceProfile | None = None,
                        budget_seconds: float = 150.0, steps: int | None = None,
                        seed: int = 0,
                        init: str | Path | None = "default", device: str = "auto",
                        batch_size: int = 16, lr: float = 2e-4,
                        progress: Callable[[float], None] | None = None
                        ) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a 2D refiner on the scan's own planes; returns ``(network, card)``.

    Args:
        array: the scan ``(X, Y, Z)`` in its units.
        affine: its RAS affine (for spacings).
        axis: the thick axis to super-resolve.
        factor: the upscaling factor along ``axis``.
        modality: ``"CT"`` or ``"MR"`` (normalisation and starting weights).
        profile: the thick axis's slice profile (shape, FWHM in slice spacings); default a box
            as wide as the spacing.
        budget_seconds: wall-clock training budget (the step count then depends on the
            machine's speed).
        steps: a fixed number of training steps instead of the time budget: with the same
            ``seed`` the result is then the same on every run.
        init: ``"default"`` (the shipped model for the modality, if any), a model folder, or
            ``None`` to start from scratch.
    """
    from medsr.checkpoint import load_model
    from medsr.device import resolve_device
    from medsr.models import default_model
    from medsr.nets import build_network
    from medsr.training.config import (
        DataConfig,
        DegradationConfig,
        NetworkConfig,
        PatchConfig,
        TrainConfig,
    )
    from medsr.training.data import PairSampler, Volume
    from medsr.training.loop import Stepper
    from medsr.transforms.intensity import default_normalization, fit_scaling

    dev = resolve_device(device)
    profile = profile or SliceProfile()
    if not profile.width > 0:
        raise MedsrError("the slice thickness must be positive")
    views = inplane_truth(array, affine, axis, factor)
    init_path = default_model(modality) if init == "default" else init
    if init_path is not None:
        torch.manual_seed(seed)
        net, base_card = load_model(init_path, dev)
        normalization = base_card["normalization"]
        interpolation = base_card.get("interpolation", "linear")
        net_input = base_card.get("input", "lr")
        scale = list(base_card.get("scale", [1, 1]))
    else:
        torch.manual_seed(seed)
        net = build_network(**FALLBACK_NETWORK).to(dev)
        normalization = default_normalization(modality)
        interpolation = "bspline"
        net_input, scale = "interpolated", [1, 1]
    cfg = TrainConfig(
        name="self-supervised", seed=seed,
        data=DataConfig(modality=modality, normalization=normalization),
        patch=PatchConfig(size=[64, factor * max(4, round(64 / factor))],
                          batch_size=batch_size, min_foreground=0.2),
        degradation=DegradationConfig(factor=factor, thickness=[profile.width] * 2,
                                      profiles=[profile.kind], noise=[0.0, 0.0]),
        network=NetworkConfig(name=net.config.get("name", "edsr"), spatial_dims=2,
                              input=net_input, interpolation=interpolation))
    if net_input != "interpolated" and not getattr(net, "takes_factor", False) \
            and scale[-1] != factor:
        raise MedsrError(f"the initial model upscales ×{scale[-1]}, not ×{factor}")
    scaling = fit_scaling(array, normalization)
    volumes = [Volume(f"scan, degraded along axis {a}",
                      torch.from_numpy(scaling.forward(v)), tuple(others), lr_axes=(a,))
               for a, others, v in views]
    sampler = PairSampler(volumes, cfg)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    stepper = Stepper(net, optimizer, None, dev)
    start, step = time.perf_counter(), 0
    while (step < steps) if steps is not None else (
            time.perf_counter() - start < budget_seconds):
        stepper.step(*sampler.batch(step))
        step += 1
        if progress:
            progress(step / steps if steps is not None
                     else min(1.0, (time.perf_counter() - start) / budget_seconds))
    logger.info("self-supervised: %d steps in %.0f s", step, time.perf_counter() - start)
    from medsr.nets import network_config

    card = {"network": network_config(net), "scale": scale, "spatial_dims": 2,
            "input": net_input, "interpolation": interpolation,
            "factors": [factor, factor], "modality": modality,
            "normalization": normalization, "self_supervised": {
                "steps": step, "budget_seconds": None if steps is not None else budget_seconds,
                "seed": seed,
                "slice_profile": {"kind": profile.kind, "width": profile.width},
                "target_spacing_mm": float(voxel_size(affine)[axis] / factor),
                "initial_model": str(init_path) if init_path else None},
            "training_data": ["the scan itself (in-plane slices)"], "validation": None}
    return net.eval(), card


def resample_to_spacing(array: np.ndarray, axis: int, src: float, dst: float) -> np.ndarray:
    """Resample ``array`` along ``axis`` from spacing ``src`` to ``dst`` mm (same start edge).

    A coarser target averages the source voxels each target voxel covers (its box profile);
    a finer one interpolates linearly. Within 2 % the array is returned as it is.
    """
    if abs(dst / src - 1.0) < 0.02:
        return np.asarray(array, dtype=np.float32)
    n = array.shape[axis]
    m = max(1, int(np.floor(n * src / dst + 1e-6)))
    if dst > src:  # overlap of target [j, j+1)·dst with source [i, i+1)·src
        lo = np.arange(m)[:, None] * dst
        edges = np.arange(n)[None, :] * src
        w = np.clip(np.minimum(lo + dst, edges + src) - np.maximum(lo, edges), 0.0, None)
    else:
        pos = np.clip((np.arange(m) + 0.5) * dst / src - 0.5, 0.0, n - 1.0)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        w = np.zeros((m, n))
        np.add.at(w, (np.arange(m), i0), 1.0 - (pos - i0))
        np.add.at(w, (np.arange(m), i1), pos - i0)
    w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    moved = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).movedim(axis, -1)
    return (moved @ torch.from_numpy(w).T).movedim(-1, axis).contiguous().numpy()


def inplane_truth(array: np.ndarray, affine: np.ndarray, axis: int, factor: int
                  ) -> list[tuple[int, list[int], np.ndarray]]:
    """The scan's in-plane truth for a through-plane request: ``(a, plane axes, volume)`` per
    high-resolution axis ``a``, the volume resampled along ``a`` to the target spacing
    ``d[axis] / factor`` (cropped to whole LR voxels), so that degrading it ×``factor`` along
    ``a`` mimics the thick axis in voxel units."""
    d = voxel_size(affine)
    inplane = [a for a in range(3) if a != axis]
    if not all(d[a] <= 1.5 * min(d[b] for b in inplane) for a in inplane) \
            or max(d[a] for a in inplane) > 0.9 * d[axis]:
        raise MedsrError("self-supervised SR needs a high-resolution plane: the two axes other "
                         f"than the thick axis {axis} have spacings {d[inplane].round(3)}")
    target = float(d[axis]) / factor
    views = []
    for a in inplane:
        v = resample_to_spacing(array, a, float(d[a]), target)
        keep = (v.shape[a] // factor) * factor
        if keep < 4 * factor:
            raise MedsrError(f"axis {a} is too short ({array.shape[a]} voxels) to learn ×{factor}")
        index = [slice(None)] * 3
        index[a] = slice(0, keep)
        views.append((a, inplane, np.ascontiguousarray(v[tuple(index)])))
    return views
