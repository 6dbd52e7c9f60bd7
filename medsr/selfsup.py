"""Per-scan self-supervised SR: learn from the scan's own high-resolution planes.

The idea of SMORE/ECLARE (Zhao et al. 2020; Remedios et al. 2023), built on medsr's parts: the
in-plane slices of a thick-slice scan are high resolution, so degrading them along one in-plane
axis with the scan's slice profile (thickness and spacing in in-plane voxels) gives training
pairs for exactly the through-plane problem. A 2D residual refiner (the default model's
architecture, starting from its weights when one is shipped for the modality) is fine-tuned
on those pairs within a time budget, then applied through-plane in both orthogonal planes that
contain the thick axis, and the two are averaged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size

logger = logging.getLogger(__name__)

#: architecture used when no default model is shipped for the modality
FALLBACK_NETWORK = {"name": "edsr", "spatial_dims": 2, "scale": [1, 1], "features": 16,
                    "num_blocks": 8}


def fit_self_supervised(array: np.ndarray, affine: np.ndarray, *, axis: int, factor: int,
                        modality: str, slice_thickness: float | None = None,
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
        slice_thickness: slice thickness in mm (FWHM of a box profile); default the spacing.
        budget_seconds: wall-clock training budget (the step count then depends on the
            machine's speed).
        steps: a fixed number of training steps instead of the time budget: with the same
            ``seed`` the result is then the same on every run.
        init: ``"default"`` (the shipped model for the modality, if any), a model folder, or
            ``None`` to start from scratch.
    """
    from medsr.checkpoint import load_model
    from medsr.models import default_model
    from medsr.nets import build_network
    from medsr.training.config import (DataConfig, DegradationConfig, NetworkConfig,
                                       PatchConfig, TrainConfig)
    from medsr.training.data import PairSampler, Volume
    from medsr.training.loop import Stepper, resolve_device
    from medsr.transforms.intensity import default_normalization, fit_scaling

    dev = resolve_device(device)
    d = voxel_size(affine)
    inplane = [a for a in range(3) if a != axis]
    d_in = float(max(d[a] for a in inplane))
    hr_axes = tuple(a for a in inplane if d[a] <= 1.5 * d.min())
    if len(hr_axes) < 2:
        raise MedsrError("self-supervised SR needs a high-resolution plane: the two axes other "
                         f"than the thick axis {axis} have spacings {d[inplane].round(3)}")
    thickness_mm = slice_thickness or float(d[axis])
    if thickness_mm <= 0:
        raise MedsrError("--slice-thickness must be positive")
    ratio = thickness_mm / (factor * d_in)  # profile FWHM over LR spacing, in-plane voxels
    init_path = default_model(modality) if init == "default" else init
    if init_path is not None:
        torch.manual_seed(seed)
        net, base_card = load_model(init_path, dev)
        normalization = base_card["normalization"]
        interpolation = base_card.get("interpolation", "linear")
    else:
        torch.manual_seed(seed)
        net = build_network(**FALLBACK_NETWORK).to(dev)
        normalization = default_normalization(modality)
        interpolation = "bspline"
    cfg = TrainConfig(
        name="self-supervised", seed=seed,
        data=DataConfig(modality=modality, normalization=normalization),
        patch=PatchConfig(size=[64, factor * max(4, round(64 / factor))],
                          batch_size=batch_size, min_foreground=0.2),
        degradation=DegradationConfig(factor=factor, thickness=[ratio, ratio],
                                      profiles=["box"], noise=[0.0, 0.0]),
        network=NetworkConfig(name=net.config.get("name", "edsr"), spatial_dims=2,
                              input="interpolated", interpolation=interpolation))
    scaling = fit_scaling(array, normalization)
    data = torch.from_numpy(scaling.forward(np.asarray(array, dtype=np.float32)))
    sampler = PairSampler([Volume("scan", data, hr_axes)], cfg)
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

    card = {"network": network_config(net), "scale": [1, 1], "spatial_dims": 2,
            "input": "interpolated", "interpolation": interpolation,
            "factors": [factor, factor], "modality": modality,
            "normalization": normalization, "self_supervised": {
                "steps": step, "budget_seconds": None if steps is not None else budget_seconds,
                "seed": seed,
                "slice_thickness_mm": thickness_mm, "in_plane_spacing_mm": d_in,
                "initial_model": str(init_path) if init_path else None},
            "training_data": ["the scan itself (in-plane slices)"], "validation": None}
    return net.eval(), card


def thick_axis_and_factor(affine: np.ndarray, scale: Sequence[int] | None) -> tuple[int, int]:
    """The single axis to upscale and its factor, from ``scale`` or the spacings."""
    from medsr.geometry import default_factors, parse_factors

    factors = parse_factors(scale) if scale is not None else default_factors(voxel_size(affine))
    axes = [a for a, f in enumerate(factors) if f > 1]
    if len(axes) != 1:
        raise MedsrError("self-supervised SR upscales one (thick) axis; asked for factors "
                         f"{list(factors)}")
    return axes[0], int(factors[axes[0]])
