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
the modality) is fine-tuned on those pairs.

**It stops on work, not seconds.** A few of the scan's slices (every 8th or so along the thick
axis, at most 4) are held out of training; their in-plane planes, degraded the same way, are
the held-out pairs. The pairs to learn from are made once, into a bank on the training device
(flipped there at random), so sampling never starves a GPU. Every :data:`EVAL_EVERY` steps
the network is scored on the held-out pairs (PSNR in normalised units, and against B-spline
on the same pairs); the learning rate halves when the score has not improved by
:data:`MIN_GAIN_DB` for :data:`PATIENCE` evaluations, and training stops at the next such
plateau (or at ``max_steps``, or at the ``budget_seconds`` cap), keeping the best weights.
``steps`` fixes the step count instead (the same result on every machine). The steps, the
stopping reason and the held-out PSNR against B-spline go into the card (and from there into
the output's metadata, ``meta["medsr_self_supervised"]``, and the log).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsr.consistency import SliceProfile
from medsr.errors import MedsrError
from medsr.geometry import plane_pixel
from medsr.geometry import spacing as voxel_size
from medsr.inplane import (  # noqa: F401 - resample_to_spacing: public here too
    inplane_truth,
    profile_variance,
    resample_to_spacing,
)

logger = logging.getLogger(__name__)

#: architecture used when no default model is shipped for the modality
FALLBACK_NETWORK = {"name": "edsr", "spatial_dims": 2, "scale": [1, 1], "features": 16,
                    "num_blocks": 8}
#: training steps between two scores on the held-out pairs
EVAL_EVERY = 50
#: a score must beat the best by this much (dB) to count as an improvement
MIN_GAIN_DB = 0.05
#: evaluations without improvement before the learning rate halves (then before stopping)
PATIENCE = 3
#: the most steps the stopping rule may run (a cap, like ``budget_seconds``). On a 256×256×36
#: head CT ×3 (held-out truth, ``benchmarks/selfsup_steps.py``) at the learning rate below:
#: +4.89 dB after 150 steps, +5.10 after 300 (fixed step counts); with the stopping rule's
#: best-of checkpoints 150 and 200 steps gave the same +5.02 dB, and 150 keeps the whole run
#: under a minute on 2 idle cores (51 s)
MAX_STEPS = 150
#: the fine-tuning learning rate: 5e-4 reaches at 150 steps what 2e-4 did at 250
LEARNING_RATE = 5e-4
#: the share of the fitted weights kept per modality, the rest the starting model's
#: (:func:`average_weights`). The held-out in-plane pairs cannot choose it (they are what the
#: fit learns from, and always prefer the fitted weights); it was measured against the
#: through-plane truth of held-out scans (``docs/results.md``): for MR, whose default model
#: knows T1 only, the averaged weights generalise better to other contrasts (EPI +0.1 to
#: +0.2 dB) and match the fitted ones on T1; CT keeps the fitted weights (0.75 cost 0.15 dB).
#: A shipped model's card may set its own (``selfsup_weight_average``): the coarse MR model,
#: which learnt from EPI, keeps 0.5 (docs/training_data.md, v0.10)
WEIGHT_AVERAGE = {"MR": 0.75, "CT": 1.0}
#: side of the self-supervised training patches (shorter on a scan with a shorter plane)
PAIR_PATCH = 64
#: pairs made once into the bank the batches are drawn from (flipped at random)
BANK_PAIRS = 2048


def fit_self_supervised(array: np.ndarray, affine: np.ndarray, *, axis: int, factor: int,
                        modality: str, profile: SliceProfile | None = None,
                        budget_seconds: float = 150.0, steps: int | None = None,
                        seed: int = 0,
                        init: str | Path | None = "default", device: str = "auto",
                        batch_size: int = 16, lr: float = LEARNING_RATE,
                        max_steps: int = MAX_STEPS,
                        progress: Callable[[float], None] | None = None,
                        noise_sd: float = 0.0, weight_average: float | None = None
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
        budget_seconds: a wall-clock cap on training; it normally stops earlier, when the
            held-out pairs stop improving (see the module doc).
        steps: a fixed number of training steps instead of the stopping rule: with the same
            ``seed`` the result is then the same on every run.
        max_steps: the most steps the stopping rule may run.
        init: ``"default"`` (the shipped model for the modality, if any), a model folder, or
            ``None`` to start from scratch.
        noise_sd: the noise of the thick slices (scan units, :mod:`medsr.noise`): the pairs'
            LR is topped up to it (white Gaussian noise), since degrading the in-plane truth
            averages its noise down while the real slices carry it whole.
        weight_average: the share ``α`` of the fitted weights in the returned network, the
            rest the starting model's (:func:`average_weights`); default the starting model
            card's ``selfsup_weight_average``, else :data:`WEIGHT_AVERAGE` for the modality;
            1: the fitted weights as they are.
            Ignored when starting from scratch.
    """
    if weight_average is not None and not 0.0 <= weight_average <= 1.0:
        raise MedsrError(f"weight_average must be between 0 and 1, got {weight_average}")
    from medsr.device import resolve_device
    from medsr.noise import top_up_sd
    from medsr.training.config import (
        DataConfig,
        DegradationConfig,
        NetworkConfig,
        PatchConfig,
        TrainConfig,
    )
    from medsr.training.data import PairSampler, Volume
    from medsr.transforms.intensity import fit_scaling

    dev = resolve_device(device)
    profile = profile or SliceProfile()
    if not profile.width > 0:
        raise MedsrError("the slice thickness must be positive")
    views = inplane_truth(array, affine, axis, factor)
    init_path = initial_model(init, modality, plane_pixel(affine, axis))
    net, start = _starting_network(init_path, modality, dev, seed)
    normalization, interpolation = start["normalization"], start["interpolation"]
    net_input, scale = start["input"], start["scale"]
    scaling = fit_scaling(array, normalization)
    top_up = top_up_sd(noise_sd / scaling.scale, profile_variance(factor, profile))
    cfg = TrainConfig(
        name="self-supervised", seed=seed,
        data=DataConfig(modality=modality, normalization=normalization),
        patch=PatchConfig(size=pair_patch(views, factor), batch_size=batch_size,
                          min_foreground=0.2),
        degradation=DegradationConfig(factor=factor, thickness=[profile.width] * 2,
                                      profiles=[profile.kind], noise=[top_up, top_up]),
        network=NetworkConfig(name=net.config.get("name", "edsr"), spatial_dims=2,
                              input=net_input, interpolation=interpolation))
    if net_input != "interpolated" and not getattr(net, "takes_factor", False) \
            and scale[-1] != factor:
        raise MedsrError(f"the initial model upscales ×{scale[-1]}, not ×{factor}")
    held = held_out_slices(array.shape[axis])
    volumes = [Volume(f"scan, degraded along axis {a}",
                      torch.from_numpy(np.delete(scaling.forward(v), held, axis=axis)),
                      tuple(others), lr_axes=(a,))
               for a, others, v in views]
    sampler = PairSampler(volumes, cfg)
    bank = PairBank(sampler, BANK_PAIRS if steps is None else min(BANK_PAIRS,
                                                                   steps * batch_size), dev,
                    seed=seed)
    check = HeldOut([(a, np.take(scaling.forward(v), held, axis=axis)) for a, _, v in views],
                    axis, factor, profile, net_input, interpolation, dev, top_up)
    alpha = 1.0 if init_path is None else float(
        weight_average if weight_average is not None
        else start.get("selfsup_weight_average", WEIGHT_AVERAGE.get(modality.upper(), 1.0)))
    if not 0.0 <= alpha <= 1.0:  # a model card's own share
        raise MedsrError(f"{init_path}: selfsup_weight_average must be between 0 and 1, "
                         f"got {alpha}")
    initial = copy.deepcopy(net.state_dict()) if alpha < 1.0 else None
    step, stopped, seconds, rule = _fit(net, bank, check, dev, steps=steps, max_steps=max_steps,
                                        budget_seconds=budget_seconds, lr=lr,
                                        batch_size=batch_size, seed=seed, progress=progress)
    psnr = fitted_psnr = rule.best if rule is not None and rule.history else check.psnr(net)
    if initial is not None:
        average_weights(net, initial, alpha)
        psnr = check.psnr(net)
    best_step = rule.best_step if rule is not None else step
    report = {"steps": step, "best_step": best_step, "stopped": stopped,
              "weight_average": alpha, **({} if initial is None else {
                  "held_out_psnr_fitted": round(fitted_psnr, 3)}),
              "seconds": round(seconds, 1), "held_out_slices": [int(i) for i in held],
              "held_out_psnr": round(psnr, 3), "held_out_psnr_bspline":
                  round(check.bspline_psnr, 3),
              "held_out_gain_db": round(psnr - check.bspline_psnr, 3),
              "pair_noise_sd": round(top_up * scaling.scale, 6)}
    logger.info("self-supervised: %d steps in %.0f s (%s), best at step %d%s: held-out pairs "
                "%.2f dB, B-spline %.2f dB (%+.2f dB)", step, seconds, stopped, best_step,
                f", weights averaged with the initial model's ({alpha:g} fitted)"
                if alpha < 1.0 else "", psnr, check.bspline_psnr, psnr - check.bspline_psnr)
    from medsr.nets import network_config

    card = {"network": network_config(net), "scale": scale, "spatial_dims": 2,
            "input": net_input, "interpolation": interpolation,
            "factors": [factor, factor], "modality": modality,
            "normalization": normalization, "self_supervised": {
                **report, "budget_seconds": None if steps is not None else budget_seconds,
                "seed": seed,
                "slice_profile": {"kind": profile.kind, "width": profile.width},
                "target_spacing_mm": float(voxel_size(affine)[axis] / factor),
                "initial_model": str(init_path) if init_path else None},
            "training_data": ["the scan itself (in-plane slices)"], "validation": None}
    return net.eval(), card


def initial_model(init: str | Path | None, modality: str, pixel_mm: float) -> Path | str | None:
    """The model a fit starts from: for ``init="default"`` the one the default route would run
    on planes of ``pixel_mm`` (coarse planes: the coarse model), else ``init`` (None: from
    scratch)."""
    from medsr.models import default_model

    return default_model(modality, pixel_mm=pixel_mm) if init == "default" else init


def _starting_network(init_path: Path | None, modality: str, dev: torch.device, seed: int
                      ) -> tuple[torch.nn.Module, dict]:
    """The network the fit starts from (seeded) and its card: normalisation, interpolation,
    input and scale (a fresh :data:`FALLBACK_NETWORK` without ``init_path``)."""
    from medsr.checkpoint import load_model
    from medsr.nets import build_network
    from medsr.transforms.intensity import default_normalization

    torch.manual_seed(seed)
    if init_path is None:
        return build_network(**FALLBACK_NETWORK).to(dev), {
            "normalization": default_normalization(modality), "interpolation": "bspline",
            "input": "interpolated", "scale": [1, 1]}
    net, card = load_model(init_path, dev)
    return net, {**card, "interpolation": card.get("interpolation", "linear"),
                 "input": card.get("input", "lr"), "scale": list(card.get("scale", [1, 1]))}


def _fit(net: torch.nn.Module, bank: PairBank, check: HeldOut, dev: torch.device, *,
         steps: int | None, max_steps: int, budget_seconds: float, lr: float, batch_size: int,
         seed: int, progress: Callable[[float], None] | None
         ) -> tuple[int, str, float, StoppingRule | None]:
    """Train ``net`` on the bank's pairs: ``steps`` fixed steps, or the stopping rule (then the
    best weights are restored). Returns ``(steps run, why it stopped, seconds, rule)``."""
    from medsr.runtime import native_bf16, precision
    from medsr.training.loop import Stepper

    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    # bf16 steps on a CPU that computes them natively (precision "auto"): 2.6x faster steps
    stepper = Stepper(net, optimizer, None, dev,
                      cpu_bf16=precision() == "auto" and dev.type == "cpu" and native_bf16())
    gen = torch.Generator(device=dev).manual_seed(seed)
    rule = None if steps is not None else StoppingRule(net)
    if rule is not None:  # the starting point is a candidate too
        rule.update(0, check.psnr(net), optimizer)
    start, step, stopped = time.perf_counter(), 0, "steps"
    while steps is None or step < steps:
        if steps is None:
            if step >= max_steps:
                stopped = "max_steps"
                break
            if time.perf_counter() - start >= budget_seconds:
                stopped = "budget"
                break
        stepper.step(*bank.batch(batch_size, gen))
        step += 1
        if rule is not None and step % EVAL_EVERY == 0:
            verdict = rule.update(step, check.psnr(net), optimizer)
            logger.info("self-supervised: step %d, held-out %.2f dB (B-spline %.2f dB)%s",
                        step, rule.history[-1][1], check.bspline_psnr,
                        f"; {verdict}" if verdict else "")
            if verdict == "plateau":
                stopped = "plateau"
                break
        if progress:
            progress(step / steps if steps is not None else
                     max(step / max_steps, (time.perf_counter() - start) / budget_seconds))
    seconds = time.perf_counter() - start
    if rule is not None:
        rule.restore(net)
    return step, stopped, seconds, rule


def average_weights(net: torch.nn.Module, initial: dict, alpha: float) -> None:
    """Set ``net``'s floating-point weights to ``alpha·fitted + (1 - alpha)·initial`` in place
    (a weight-space ensemble of the fine-tuned and the starting model; Wortsman et al.,
    "Robust fine-tuning of zero-shot models", CVPR 2022)."""
    fitted = net.state_dict()
    net.load_state_dict({k: torch.lerp(initial[k].to(v.device), v, alpha)
                         if v.is_floating_point() else v for k, v in fitted.items()})


def pair_patch(views: list[tuple[int, list[int], np.ndarray]], factor: int,
               size: int = PAIR_PATCH) -> list[int]:
    """The training patch ``[other axis, degraded axis]`` of the in-plane pairs: ``size``
    square, but no longer than the shortest plane has (a thin series' 24 slices): a patch
    padded beyond the scan teaches its zero border, not its anatomy."""
    along = min(v.shape[a] for a, _, v in views)
    across = min(v.shape[next(b for b in plane if b != a)] for a, plane, v in views)
    k = round(min(size, along) / factor)
    if k * factor > along:  # whole LR voxels inside the plane
        k = along // factor
    return [min(size, across), factor * max(2, k)]


def held_out_slices(n: int) -> np.ndarray:
    """Indices along the thick axis (``n`` slices) kept out of training: about every 8th, at
    most 4, evenly spread, never the first or last."""
    count = min(4, max(1, round(n / 8)))
    return np.unique(np.round((np.arange(count) + 0.5) * n / count).astype(int)
                     .clip(1, max(1, n - 2)))


class PairBank:
    """Pairs made once by the sampler and kept on the training device; a batch is a random
    draw from them, flipped at random along both axes there (the profile is symmetric and the
    patches whole LR voxels long, so a flipped pair is a pair)."""

    def __init__(self, sampler, pairs: int, device: torch.device, seed: int = 0,
                 chunk: int = 64) -> None:
        self.coins = torch.Generator().manual_seed(seed)  # flips, drawn on the CPU
        lrs, hrs = [], []
        for i in range(math.ceil(pairs / chunk)):
            lr, hr = sampler.batch(i, size=chunk)
            lrs.append(lr)
            hrs.append(hr)
        self.lr = torch.cat(lrs).to(device)
        self.hr = torch.cat(hrs).to(device)

    def batch(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.lr), (size,), device=self.lr.device, generator=gen)
        lr, hr = self.lr[pick], self.hr[pick]
        flips = torch.randint(2, (2,), generator=self.coins).tolist()
        dims = [d for d, f in zip((-2, -1), flips) if f]
        return (lr.flip(dims), hr.flip(dims)) if dims else (lr, hr)


class HeldOut:
    """The held-out slices' planes, degraded along their in-plane axis as the training pairs
    are; :meth:`psnr` scores a network on them (normalised units, data range 1)."""

    def __init__(self, views: list[tuple[int, np.ndarray]], axis: int, factor: int,
                 profile: SliceProfile, net_input: str, interpolation: str,
                 device: torch.device, noise_sd: float = 0.0) -> None:
        from medsr.noise import add_top_up
        from medsr.resample import upsample_axis
        from medsr.training.data import interpolate_input
        from medsr.transforms.degrade import slice_profile

        self.factor, self.device, self.pairs = factor, device, []
        err_bspline, count = 0.0, 0
        for a, planes in views:  # planes: the view with only the held-out slices on ``axis``
            for k in range(planes.shape[axis]):
                plane = np.take(planes, k, axis=axis)  # 2D, axes in order; ``a`` degraded
                b = [x for x in range(3) if x != axis].index(a)
                hr = torch.from_numpy(np.ascontiguousarray(np.moveaxis(plane, b, -1)))
                lr = slice_profile(hr[None], 1, factor, profile.width * factor, profile.kind)
                lr = torch.from_numpy(add_top_up(lr.numpy(), noise_sd, seed=len(self.pairs)))
                up = upsample_axis(lr.numpy(), 2, factor, "bspline")[0]
                err_bspline += float(np.sum((up - hr.numpy()) ** 2, dtype=np.float64))
                count += hr.numel()
                net_in = lr[None]
                if net_input == "interpolated":
                    net_in = interpolate_input(net_in, factor, interpolation)
                self.pairs.append((net_in.to(device), hr.to(device)))
        self.count = count
        self.bspline_psnr = _psnr(err_bspline / count)

    @torch.no_grad()
    def psnr(self, net: torch.nn.Module) -> float:
        from medsr.training.loop import call

        net.eval()
        err = 0.0
        for net_in, hr in self.pairs:
            pred = call(net, net_in, hr.shape[-1])[0, 0].float()
            err += float(torch.sum((pred - hr).double() ** 2))
        return _psnr(err / self.count)


def _psnr(mse: float) -> float:
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


@dataclass
class StoppingRule:
    """Best held-out score and weights; halve the learning rate at the first plateau, stop
    at the second (:data:`PATIENCE` evaluations without :data:`MIN_GAIN_DB`)."""

    net: torch.nn.Module

    def __post_init__(self) -> None:
        self.best, self.best_step, self.best_state = -math.inf, 0, None
        self.waited, self.halved, self.history = 0, False, []

    def update(self, step: int, psnr: float, optimizer: torch.optim.Optimizer) -> str:
        self.history.append((step, psnr))
        previous = self.best
        if psnr > previous:
            self.best, self.best_step = psnr, step
            self.best_state = copy.deepcopy(self.net.state_dict())
        if psnr > previous + MIN_GAIN_DB:
            self.waited = 0
            return ""
        self.waited += 1
        if self.waited < PATIENCE:
            return ""
        if self.halved:
            return "plateau"
        self.halved, self.waited = True, 0
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        return "learning rate halved"

    def restore(self, net: torch.nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)
