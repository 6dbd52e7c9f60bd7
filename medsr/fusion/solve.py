"""The joint data-consistency solve over all stacks.

Single-stack consistency (:mod:`medsr.consistency`) corrects an estimate ``x₀`` by the
smoothest change that makes it reproduce its stack, within the stack's noise. With several
stacks, each with its own operator ``A_k`` (:mod:`medsr.fusion.operators`), the same idea is a
regularised least-squares problem:

    minimise  Σ_k w_k ‖M_k (A_k x - y_k)‖²  +  λ ‖∇(x - p)‖²  +  μ ‖x - p‖²

``M_k`` keeps the voxels of stack ``k`` the grid sees, ``w_k`` weighs a stack by its factor
over its noise variance (a stack ×f thinner has ``1/f`` the energy per grid voxel, so every
stack counts alike when noise is equal), and ``p`` is the prior: the learned per-stack SR
outputs on the grid (the correction is then the smoothest one, as in one stack), or nothing
(``p = 0``: a plain smoothness-regularised solve). Conjugate gradients on the normal equations
start from ``x₀`` and stop when every stack is reproduced within its measured noise (the
discrepancy principle: Σ w‖r‖² at most Σ w·n·σ²), when the normal residual falls under
``tol``, or after ``iterations``. The data residuals are updated alongside, so the per-stack
consistency of every iterate comes at no extra cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medsr.fusion.operators import StackOperator

#: default weight of the gradient regulariser, and of the ridge toward the prior
SMOOTH, RIDGE = 0.05, 0.0


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """``∇ᵀ∇ x``: the negative Laplacian with forward differences, Neumann boundary."""
    out = torch.zeros_like(x)
    for axis in range(x.ndim):
        d = torch.diff(x, dim=axis)
        n = x.shape[axis]
        out.narrow(axis, 0, n - 1).sub_(d)
        out.narrow(axis, 1, n - 1).add_(d)
    return out


@dataclass
class SolveInfo:
    """What the solve did: iterations, why it stopped, each stack's residual RMS."""

    iterations: int
    stopped: str
    residual_rms: list[float]
    start_rms: list[float]


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sum(a.double() * b.double()))


def solve(ops: Sequence[StackOperator], stacks: Sequence[torch.Tensor], *,
          start: torch.Tensor, prior: torch.Tensor | None = None,
          noise_sd: Sequence[float] | None = None, smooth: float = SMOOTH,
          ridge: float = RIDGE, iterations: int = 30, tol: float = 1e-4,
          progress: Callable[[float], None] | None = None
          ) -> tuple[torch.Tensor, SolveInfo]:
    """The fused volume on the grid (see the module doc).

    Args:
        ops: each stack's operator (same grid).
        stacks: each stack's measured voxels (its operator's shape).
        start: the first iterate ``x₀`` on the grid.
        prior: ``p`` of the regulariser (default: none, ``p = 0``).
        noise_sd: each stack's noise sd (scan units); weights and the stopping rule. Default
            (or any zero): equal weights, no discrepancy stop.
        smooth, ridge: ``λ`` and ``μ``; relative to the data term of one stack.
        iterations: the most conjugate-gradient steps.
        tol: stop when the normal residual falls under this share of its start.
        progress: called with the share of ``iterations`` done.
    """
    k = len(ops)
    sd = list(noise_sd) if noise_sd is not None else [0.0] * k
    noisy = all(s > 0 for s in sd)
    ref = min(sd) if noisy else 1.0
    weights = [float(np.prod(op.factors)) * ((ref / s) ** 2 if noisy else 1.0)
               for op, s in zip(ops, sd)]
    masks = [op.mask.to(torch.float32) for op in ops]
    counts = [float(m.sum()) for m in masks]
    ys = [y.to(torch.float32) * m for y, m in zip(stacks, masks)]

    def regularise(v: torch.Tensor) -> torch.Tensor:
        out = smooth * laplacian(v) if smooth else torch.zeros_like(v)
        return out.add_(v, alpha=ridge) if ridge else out

    def normal(v: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        preds = [op.forward(v) * m for op, m in zip(ops, masks)]
        out = regularise(v)
        for op, w, pv in zip(ops, weights, preds):
            out.add_(op.adjoint(pv), alpha=w)
        return out, preds

    x = start.to(torch.float32).clone()
    residuals = [op.forward(x) * m - y for op, m, y in zip(ops, masks, ys)]  # M (A x - y)
    r = -regularise(x if prior is None else x - prior.to(torch.float32))  # b - H x
    for op, w, e in zip(ops, weights, residuals):
        r.sub_(op.adjoint(e), alpha=w)
    start_rms = [math.sqrt(_dot(e, e) / max(c, 1.0)) for e, c in zip(residuals, counts)]
    target = sum(w * c * s * s for w, c, s in zip(weights, counts, sd)) if noisy else 0.0

    def misfit() -> float:
        return sum(w * _dot(e, e) for w, e in zip(weights, residuals))

    p = r.clone()
    rr = _dot(r, r)
    r0 = math.sqrt(rr) or 1.0
    stopped, done = "the iteration limit", 0
    for i in range(iterations):
        if noisy and misfit() <= target:
            stopped = "every stack reproduced within its noise"
            break
        if math.sqrt(rr) <= tol * r0:
            stopped = "converged"
            break
        hp, preds = normal(p)
        alpha = rr / max(_dot(p, hp), 1e-30)
        x.add_(p, alpha=alpha)
        r.sub_(hp, alpha=alpha)
        for e, pv in zip(residuals, preds):
            e.add_(pv, alpha=alpha)
        rr_new = _dot(r, r)
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
        done = i + 1
        if progress is not None:
            progress(done / iterations)
    rms = [math.sqrt(_dot(e, e) / max(c, 1.0)) for e, c in zip(residuals, counts)]
    return x, SolveInfo(done, stopped, rms, start_rms)

