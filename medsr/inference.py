"""Network inference on whole volumes.

2D networks run on whole planes that contain the upscaled axis, a batch of planes at a time
(through ONNX Runtime on a CPU when it is installed, see :mod:`medsr.runtime`);
each orthogonal plane orientation that pairs that axis with a high-resolution one (the
network learnt from such planes) gives one *view*: both in-plane axes for a thick-slice scan,
only the in-plane one when an in-plane axis of a thick-slice scan is upscaled. The views'
mean is the estimate, their spread feeds the uncertainty map. 3D networks run by sliding
window (MONAI's ``sliding_window_inference``) with the axis moved last. Several upscaled axes
are done one after another. Intensities are normalised as the model card says and mapped
back to the scan's units. Memory is bounded by the caller working slab by slab
(:mod:`medsr.upscaling`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medsr.errors import MedsrError
from medsr.resample import upsample_axis
from medsr.runtime import GraphNet, Runner, plane_runner
from medsr.transforms.intensity import Scaling, fit_scaling

if TYPE_CHECKING:  # torch loads where a network runs in it (a cached graph needs none)
    import torch
    from torch import nn

    from medsr.background import BodyRows


def model_factor(card: dict) -> int:
    """The factor a model upsamples its one low-resolution axis by."""
    scale = [int(s) for s in card["scale"]]
    if sorted(scale)[:-1] != [1] * (len(scale) - 1):
        raise MedsrError(f"model scale {scale} upsamples more than one axis; medsr applies "
                         "models that upsample a single axis")
    return scale[-1]


def _windowed(model: nn.Module, x: torch.Tensor, roi: Sequence[int], device: torch.device,
              amp: bool, batch: int) -> torch.Tensor:
    import torch
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


def _plane_batch(model: nn.Module, plane_voxels: int, budget_bytes: float = 3e8) -> int:
    """Planes per forward pass so that the activations stay within ``budget_bytes``."""
    features = int(getattr(model, "config", {}).get("features", 32))
    return max(1, int(budget_bytes // (6 * 4 * features * max(1, plane_voxels))))


def receptive_radius(model: nn.Module | GraphNet) -> int:
    """An upper bound, in output voxels, on how far a network looks (sum of conv reaches)."""
    if isinstance(model, GraphNet):
        return model.radius
    from torch import nn

    reach = 0
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
            k, d = (max(v) if isinstance(v, tuple) else v
                    for v in (layer.kernel_size, layer.dilation))
            reach += (k - 1) // 2 * d
    return reach


def upscale_axis(array: np.ndarray, axis: int, model: nn.Module | GraphNet, card: dict, *,
                 device: torch.device | str, companions: Sequence[int] | None = None,
                 planes: str = "both", roi: int = 256, factor: int | None = None,
                 backend: str = "auto", core: tuple[int, int, int] | None = None,
                 rows: BodyRows | None = None,
                 progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """Upscale normalised ``array`` (X, Y, Z) along ``axis``; one prediction per plane view.

    Args:
        companions: for 2D models, the axes that may form a plane with ``axis`` (default:
            both others). Each gives one view: the network run on the planes spanned by
            ``axis`` and that companion, a batch of whole planes at a time.
        planes: ``"both"`` (every companion) or ``"one"`` (the first only, half the time).
        roi: sliding-window size for 3D networks.
        factor: the factor for a multi-factor network (default: the card's scale).
        backend: for 2D networks, ``"auto"`` (ONNX Runtime on a CPU when available, see
            :mod:`medsr.runtime`), ``"torch"`` or ``"onnx"``.
        core: ``(axis, start, stop)``: only that range along ``axis`` is wanted (a slab
            inside its halo). A view whose planes are stacked along ``axis`` then runs only
            those planes, and leaves zeros elsewhere; views whose planes span ``axis`` need
            the halo and run whole.
        rows: for 2D models, the rows of each plane to compute
            (:func:`medsr.background.body_rows`); the others take the cubic B-spline along
            ``axis``. Default: every row.

    Returns:
        The views' predictions (float32, the fine grid); their mean is the estimate and their
        spread the raw material of :mod:`medsr.uncertainty`.
    """
    f = factor or model_factor(card)
    if int(card["spatial_dims"]) == 3:
        out = _upscale_3d(array, axis, model, device, roi, f)
        if progress:
            progress(1.0)
        return [out]
    if not isinstance(model, GraphNet):
        import torch

        model = model.to(device).eval().to(memory_format=torch.channels_last)
    n = array.shape[axis]
    others = [a for a in range(3) if a != axis]
    src = np.ascontiguousarray(array, dtype=np.float32)
    # each view stacks slices along one other axis; its plane is (the companion, axis)
    views = [a for a in others if companions is None or sum(others) - a in companions]
    views = views if planes == "both" else views[:1]

    def wanted(stack_axis: int) -> tuple[int, int]:
        if core is not None and core[0] == stack_axis:
            return core[1], core[2]
        return 0, array.shape[stack_axis]

    total = sum(last - first for first, last in map(wanted, views))
    done, outputs = 0, []
    for stack_axis in views:
        inplane = [a for a in others if a != stack_axis][0]
        shape = list(array.shape)
        shape[axis] = n * f
        first, last = wanted(stack_axis)
        out = (np.empty if (first, last) == (0, array.shape[stack_axis]) else np.zeros)(
            shape, dtype=np.float32)
        order = np.argsort([stack_axis, inplane, axis])
        # slices (N, inplane, axis): the LR axis last, as the model was trained
        slices = src.transpose(stack_axis, inplane, axis)
        batch = _plane_batch(model, slices.shape[1] * slices.shape[2] * f)
        run = plane_runner(model, device, f, slices[:1, None], backend)
        for start in range(first, last, batch):
            block = np.ascontiguousarray(slices[start:min(start + batch, last)])
            if rows is None:
                y = run(block[:, None])[:, 0]
            else:
                y = _body_only(run, block, f, rows, stack_axis, start)
            index = [slice(None)] * 3
            index[stack_axis] = slice(start, start + y.shape[0])
            out[tuple(index)] = y.transpose(order)
            done += y.shape[0]
            if progress:
                progress(done / total)
        outputs.append(out)
    return outputs


def _upscale_3d(array: np.ndarray, axis: int, model: nn.Module, device: torch.device,
                roi: int, f: int) -> np.ndarray:
    """A 3D network by sliding window, the upscaled axis last."""
    import torch

    model = model.to(device).eval()
    others = [a for a in range(3) if a != axis]
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    x = src.permute(*others, axis)[None, None]
    roi3 = [min(roi // 2, s) for s in x.shape[2:4]] + [min(max(8, roi // (2 * f)),
                                                             array.shape[axis])]
    with torch.no_grad():
        y = _windowed(model, x, roi3, device, device.type == "cuda", 1)[0, 0]
    return y.permute(*np.argsort([*others, axis]).tolist()).numpy()


def _body_only(run: Runner, block: np.ndarray, f: int, body: BodyRows, stack: int,
               start: int) -> np.ndarray:
    """A batch of planes ``(N, H, W)`` ×``f`` along W: the network's output on each plane's
    body rows (computed on their span widened by the network's reach, so unchanged), the
    cubic B-spline along W on the other rows (:mod:`medsr.background`)."""
    n, h, w = block.shape
    keep = np.ascontiguousarray(body.views[stack][start:start + n])
    if bool(keep.all()):
        return run(block[:, None])[:, 0]
    lo, hi = body.crop(stack, start, start + n)
    y = np.empty((n, h, w * f), dtype=np.float32)
    if hi > lo:
        y[:, lo:hi] = run(block[:, None, lo:hi])[:, 0]
    lines = np.ascontiguousarray(block[~keep])[:, None]  # (lines, 1, W)
    y[~keep] = upsample_axis(lines, 2, f, "bspline")[:, 0]
    return y


def plane_axes(card: dict) -> int:
    """How many axes of a 2D model's planes are low resolution: 1 (through-plane) or 2
    (in-plane SR)."""
    return int(card.get("lr_axes", card.get("network", {}).get("lr_axes", 1)))


def upscale_plane(array: np.ndarray, axes: Sequence[int], factor: int,
                  model: nn.Module | GraphNet, card: dict, *, device: torch.device | str,
                  scaling: Scaling | None = None, members: int = 2, backend: str = "auto",
                  progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """In-plane SR: ``array`` (X, Y, Z, scan units) ×``factor`` along both ``axes`` with an
    in-plane network (:func:`plane_axes` 2), plane by plane across the third axis.

    Returns up to two *members* in scan units: the planes as stored and transposed (the
    network is not exactly symmetric in its two axes; their mean is the estimate, their
    spread feeds :mod:`medsr.uncertainty`).
    """
    a, b = (int(x) for x in axes)
    stack = 3 - a - b
    scaling = scaling or fit_scaling(array, card["normalization"])
    x = scaling.forward(np.asarray(array, dtype=np.float32))
    slices = np.ascontiguousarray(np.moveaxis(x, (stack, a, b), (0, 1, 2)))
    if not isinstance(model, GraphNet):
        import torch

        model = model.to(device).eval()
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
    n, h, w = slices.shape
    batch = _plane_batch(model, h * w * factor * factor)
    outputs = []
    for m in range(members):
        planes = slices if m == 0 else slices.transpose(0, 2, 1)
        run = plane_runner(model, device, factor, planes[:1, None], backend)
        out = np.empty((n, h * factor, w * factor), dtype=np.float32)
        for start in range(0, n, batch):
            y = run(planes[start:start + batch, None])[:, 0]
            out[start:start + y.shape[0]] = y if m == 0 else y.transpose(0, 2, 1)
            if progress:
                progress((m * n + start + y.shape[0]) / (members * n))
        np.multiply(out, np.float32(scaling.scale), out=out)
        np.add(out, np.float32(scaling.offset), out=out)
        outputs.append(np.moveaxis(out, (0, 1, 2), (stack, a, b)))
    return outputs


def factor_range(card: dict) -> tuple[int, int]:
    """The factors a model serves: its own scale, or a range when it refines an interpolation."""
    if card.get("input", "lr") == "interpolated" or "factors" in card.get("network", {}):
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


def check_factors(card: dict, factors: Sequence[int]) -> list[int]:
    """The axes to upscale, or an error when the model does not serve ``factors``."""
    lo, hi = factor_range(card)
    axes = [a for a, s in enumerate(factors) if s > 1]
    if not axes or any(s != 1 and not lo <= s <= hi for s in factors):
        trained = f"×{lo}" if lo == hi else f"×{lo} to ×{hi}"
        raise MedsrError(f"this model upscales {trained} along an axis; asked for scale "
                         f"{list(factors)} (use --scale with 1 and factors in that range)")
    return axes


def predict_views(array: np.ndarray, factors: Sequence[int], model: nn.Module, card: dict, *,
                  device: torch.device, spacing: Sequence[float] | None = None,
                  scaling: Scaling | None = None, planes: str = "both",
                  backend: str = "auto", core: tuple[int, int, int] | None = None,
                  rows: BodyRows | None = None,
                  progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """Upscale every axis whose factor is > 1; the last axis's views, in scan units.

    A model that refines an interpolated input (card ``"input": "interpolated"``) serves any
    factor in its trained range: the axis is interpolated first, then corrected. With
    ``spacing`` (mm per axis), 2D models run only on planes whose other axis is high
    resolution (see :func:`companion_axes`). ``scaling`` (default: fitted on ``array``) maps
    scan units to the network's; pass the whole volume's when ``array`` is a slab of it,
    and ``core`` (see :func:`upscale_axis`) for the range of it that is wanted; ``rows``
    (see there) for a single upscaled axis only.
    """
    axes = check_factors(card, factors)
    refine = card.get("input", "lr") == "interpolated"
    scaling = scaling or fit_scaling(array, card["normalization"])
    x = scaling.forward(np.asarray(array, dtype=np.float32))
    views: list[np.ndarray] = []
    for i, axis in enumerate(axes):
        step = (lambda p, i=i: progress((i + p) / len(axes))) if progress else None
        if refine:
            x = upsample_axis(x, axis, int(factors[axis]), card.get("interpolation", "linear"))
        companions = companion_axes(spacing, axis) if spacing is not None else None
        views = upscale_axis(x, axis, model, card, device=device, companions=companions,
                             planes=planes, factor=None if refine else int(factors[axis]),
                             backend=backend, core=core if i == len(axes) - 1 else None,
                             rows=rows if len(axes) == 1 else None, progress=step)
        x = views[0] if len(views) == 1 else np.mean(views, axis=0, dtype=np.float32)
    for v in views:  # back to scan units in place: the views are ours, and large
        np.multiply(v, np.float32(scaling.scale), out=v)
        np.add(v, np.float32(scaling.offset), out=v)
    return views


def upscale_with_model(array: np.ndarray, factors: Sequence[int], model: nn.Module,
                       card: dict, **kwargs) -> np.ndarray:
    """Upscale with the model (the mean of :func:`predict_views`); returns scan units."""
    views = predict_views(array, factors, model, card, **kwargs)
    return views[0] if len(views) == 1 else np.mean(views, axis=0, dtype=np.float32)
