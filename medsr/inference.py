"""Network inference on whole volumes in bounded memory.

2D networks (scale ``(1, f)``) run on the planes that contain the low-resolution axis, a batch
of slices at a time, through MONAI's ``sliding_window_inference`` (which takes outputs at a
finer resolution than the input); the orthogonal planes that contain that axis and a
high-resolution one (the network learnt from such planes) are fused by averaging: both planes
for a thick-slice scan, only the in-plane one when an in-plane axis of a thick-slice scan is
upscaled. 3D networks (scale ``(1, 1, f)``) run with the axis moved last, by sliding
window with Gaussian blending. Several upscaled axes are done one after another. Intensities
are normalised as the model card says and mapped back to the scan's units on output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medsr.errors import MedsrError
from medsr.resample import upsample_axis
from medsr.transforms.intensity import fit_scaling


def model_factor(card: dict) -> int:
    """The factor a model upsamples its one low-resolution axis by."""
    scale = [int(s) for s in card["scale"]]
    if sorted(scale)[:-1] != [1] * (len(scale) - 1):
        raise MedsrError(f"model scale {scale} upsamples more than one axis; medsr applies "
                         "models that upsample a single axis")
    return scale[-1]


def _windowed(model: nn.Module, x: torch.Tensor, roi: Sequence[int], device: torch.device,
              amp: bool, batch: int) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        if patch.ndim == 4:  # oneDNN's 2D convolutions are faster channels-last
            patch = patch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cuda"
                            else torch.float32, enabled=amp):
            return model(patch).float().contiguous()

    return sliding_window_inference(x, roi_size=list(roi), sw_batch_size=batch,
                                    predictor=predictor, overlap=0.25, mode="gaussian",
                                    sw_device=device, device=torch.device("cpu"))


@torch.no_grad()
def upscale_axis(array: np.ndarray, axis: int, model: nn.Module, card: dict, *,
                 device: torch.device, companions: Sequence[int] | None = None,
                 planes: str = "both", slice_batch: int = 8,
                 roi: int = 256, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Upscale normalised ``array`` (X, Y, Z) along ``axis`` with a single-axis model.

    Args:
        companions: for 2D models, the axes that may form a plane with ``axis`` (default:
            both others).
        planes: for 2D models, ``"both"`` (average the planes of all companions) or
            ``"one"`` (the first only, half the time).
        roi: sliding-window size in input voxels along each window axis.
    """
    f = model_factor(card)
    dims = int(card["spatial_dims"])
    amp = device.type == "cuda"
    model = model.to(device).eval()
    if dims == 2:
        model = model.to(memory_format=torch.channels_last)
    n = array.shape[axis]
    others = [a for a in range(3) if a != axis]
    shape = list(array.shape)
    shape[axis] = n * f
    out = torch.zeros(shape, dtype=torch.float32)
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if dims == 3:
        x = src.permute(*others, axis)[None, None]
        roi3 = [min(roi // 2, s) for s in x.shape[2:4]] + [min(max(8, roi // (2 * f)), n)]
        y = _windowed(model, x, roi3, device, amp, 1)[0, 0]
        if progress:
            progress(1.0)
        return y.permute(*np.argsort([*others, axis]).tolist()).numpy()
    # each view stacks slices along one other axis; its plane is (the remaining axis, axis)
    views = [a for a in others if companions is None or sum(others) - a in companions]
    views = views if planes == "both" else views[:1]
    total = sum(array.shape[v] for v in views)
    done = 0
    for stack_axis in views:
        inplane = [a for a in others if a != stack_axis][0]
        # slices (N, 1, inplane, axis): the LR axis last, as the model was trained
        slices = src.permute(stack_axis, inplane, axis)
        for start in range(0, slices.shape[0], slice_batch):
            chunk = slices[start:start + slice_batch, None]
            roi2 = [min(roi, chunk.shape[2]), min(max(8, roi // f), chunk.shape[3])]
            y = _windowed(model, chunk, roi2, device, amp, slice_batch)[:, 0]
            # back to (X, Y, Z) order: y is (stack, inplane, axis)
            order = np.argsort([stack_axis, inplane, axis]).tolist()
            index = [slice(None)] * 3
            index[stack_axis] = slice(start, start + y.shape[0])
            out[tuple(index)] += y.permute(*order)
            done += y.shape[0]
            if progress:
                progress(done / total)
    return (out / len(views)).numpy()


def factor_range(card: dict) -> tuple[int, int]:
    """The factors a model serves: its own scale, or a range when it refines an interpolation."""
    if card.get("input", "lr") == "interpolated":
        lo, hi = card["factors"]
        return int(lo), int(hi)
    f = model_factor(card)
    return f, f


def companion_axes(spacing: Sequence[float], axis: int, tolerance: float = 1.5) -> list[int]:
    """The other axes fine enough to pair with ``axis`` in a plane (spacing within
    ``tolerance`` of the finest of them)."""
    others = [a for a in range(3) if a != axis]
    finest = min(spacing[a] for a in others)
    return [a for a in others if spacing[a] <= tolerance * finest]


def upscale_with_model(array: np.ndarray, factors: Sequence[int], model: nn.Module,
                       card: dict, *, device: torch.device,
                       spacing: Sequence[float] | None = None,
                       progress: Callable[[float], None] | None = None,
                       **kwargs) -> np.ndarray:
    """Upscale every axis whose factor is > 1 with the model; returns scan units.

    A model that refines an interpolated input (card ``"input": "interpolated"``) serves any
    factor in its trained range: the axis is linearly interpolated first, then corrected.
    With ``spacing`` (mm per axis), 2D models run only on planes whose other axis is high
    resolution (see :func:`companion_axes`).
    """
    lo, hi = factor_range(card)
    axes = [a for a, s in enumerate(factors) if s > 1]
    if not axes or any(s != 1 and not lo <= s <= hi for s in factors):
        trained = f"×{lo}" if lo == hi else f"×{lo} to ×{hi}"
        raise MedsrError(f"this model upscales {trained} along an axis; asked for scale "
                         f"{list(factors)} (use --scale with 1 and factors in that range)")
    refine = card.get("input", "lr") == "interpolated"
    scaling = fit_scaling(array, card["normalization"])
    x = scaling.forward(np.asarray(array, dtype=np.float32))
    for i, axis in enumerate(axes):
        step = (lambda p, i=i: progress((i + p) / len(axes))) if progress else None
        if refine:
            x = upsample_axis(x, axis, int(factors[axis]), card.get("interpolation", "linear"))
        companions = companion_axes(spacing, axis) if spacing is not None else None
        x = upscale_axis(x, axis, model, card, device=device, companions=companions,
                         progress=step, **kwargs)
    return scaling.inverse(x).astype(np.float32)
