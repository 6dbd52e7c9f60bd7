"""Pieces shared by the SR networks: argument checks, a conv factory, interpolation, pixel shuffle.

Every network in :mod:`medsr.nets` maps a low-resolution tensor ``(B, C, *spatial)`` to
``(B, C, *(spatial[i] * scale[i]))``. Upsampled voxels subdivide the input voxels (medsr's
geometry convention): output index ``j`` along an axis upscaled by ``s`` sits at input index
``(j + 0.5) / s - 0.5``. Linear interpolation with ``align_corners=False`` and the pixel shuffle
below both follow it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_INTERP_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int; ``ValueError`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not float(value).is_integer() or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_kernel(name: str, value: object) -> int:
    """Return an odd positive kernel size (odd so that 'same' padding keeps the grid)."""
    k = check_int(name, value)
    if k % 2 == 0:
        raise ValueError(f"{name} must be odd so that the output keeps the input grid, got {k}")
    return k


def check_scale(spatial_dims: object, scale: Iterable[int]) -> tuple[int, tuple[int, ...]]:
    """Validate ``spatial_dims`` (2 or 3) and one positive integer factor per spatial axis."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if isinstance(scale, str | bytes) or not isinstance(scale, Iterable):
        raise ValueError(f"scale must be a sequence of {spatial_dims} integers, got {scale!r}")
    scale = tuple(scale)
    if len(scale) != spatial_dims:
        raise ValueError(f"scale needs one factor per spatial axis ({spatial_dims}), "
                         f"got {list(scale)}")
    return int(spatial_dims), tuple(check_int(f"scale[{i}]", s) for i, s in enumerate(scale))


def conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
         bias: bool = True) -> nn.Module:
    """A 2D or 3D convolution with 'same' zero padding.

    (torch's own classes, which MONAI's ``Conv`` factory returns too: reaching that factory
    imports all of MONAI, seconds on every learned run.)"""
    conv_class = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    return conv_class(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                      bias=bias)


def interpolate(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear upsampling of ``x`` (B, C, *spatial) by integer factors per axis.

    ``align_corners=False`` with the exact output ``size``: output index ``j`` samples input
    index ``(j + 0.5) / s - 0.5`` (voxels subdivide), border values are replicated.
    """
    if all(s == 1 for s in scale):
        return x
    size = [n * s for n, s in zip(x.shape[2:], scale)]
    return F.interpolate(x, size=size, mode=_INTERP_MODES[len(scale)], align_corners=False)


def pixel_shuffle(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """N-D pixel shuffle with one factor per axis (Shi et al., 2016, "Real-Time Single Image and
    Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network").

    Input ``(B, C * prod(scale), *spatial)``, output ``(B, C, *(spatial[i] * scale[i]))``. Channel
    ``c * prod(scale) + offset`` (``offset``: row-major index of the sub-voxel ``(r_0, r_1, ...)``)
    lands at output position ``i_k * scale[k] + r_k`` on each axis. With equal factors this is
    MONAI's ``monai.networks.utils.pixelshuffle`` (and ``torch.nn.functional.pixel_shuffle`` in
    2D); those take a single factor for all axes, whereas thick-slice volumes need e.g. (1, 1, 4).
    """
    dims = len(scale)
    b, ch, *spatial = x.shape
    r = math.prod(scale)
    if len(spatial) != dims or ch % r:
        raise ValueError(f"pixel_shuffle: expected (B, C*{r}, {dims} spatial dims), "
                         f"got {tuple(x.shape)}")
    x = x.reshape(b, ch // r, *scale, *spatial)
    order = [0, 1] + [i for k in range(dims) for i in (2 + dims + k, 2 + k)]
    return x.permute(order).reshape(b, ch // r, *(n * s for n, s in zip(spatial, scale)))


def icnr_init_(conv_layer: nn.Module, scale: Sequence[int],
               init: Callable[[torch.Tensor], torch.Tensor] = nn.init.kaiming_normal_) -> None:
    """ICNR init (Aitken et al., 2017, "Checkerboard artifact free sub-pixel convolution").

    The ``prod(scale)`` output channels that feed one sub-voxel block share the same kernel, so
    conv + :func:`pixel_shuffle` starts as nearest-neighbour upsampling (no checkerboard). Works
    with a different factor per axis, unlike ``monai.networks.utils.icnr_init``.
    """
    r = math.prod(scale)
    weight = conv_layer.weight
    base = init(torch.empty(weight.shape[0] // r, *weight.shape[1:], dtype=weight.dtype))
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(r, dim=0))
        if conv_layer.bias is not None:
            conv_layer.bias.zero_()


class Upsampler(nn.Module):
    """Sub-pixel upsampling: conv to ``out_channels * prod(scale)`` (ICNR init) + pixel shuffle.

    One shuffle step for any factor (the conv just gets ``prod(scale)`` times more channels).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 scale: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__()
        self.scale = tuple(scale)
        self.conv = conv(spatial_dims, in_channels, out_channels * math.prod(scale), kernel_size)
        icnr_init_(self.conv, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(self.conv(x), self.scale)


class SRNet(nn.Module):
    """Base of the medsr networks: checks and stores ``spatial_dims``, ``scale``, ``in_channels``.

    Subclasses set the class attribute ``name`` (registry key) and ``self.config`` (the keyword
    arguments that rebuild them, JSON-serialisable).
    """

    name: str = ""

    def __init__(self, spatial_dims: int, scale: Sequence[int], in_channels: int) -> None:
        super().__init__()
        self.spatial_dims, self.scale = check_scale(spatial_dims, scale)
        self.in_channels = check_int("in_channels", in_channels)
        self.config: dict = {"spatial_dims": self.spatial_dims, "scale": list(self.scale),
                             "in_channels": self.in_channels}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (B, in_channels, *spatial) with the right rank."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects (B, {self.in_channels}, "
                             f"{self.spatial_dims} spatial dims), got {tuple(x.shape)}")

    def upsample_input(self, x: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of the LR input to the output grid (the global skip)."""
        return interpolate(x, self.scale)


def shrink_(layer: nn.Module, factor: float) -> None:
    """Multiply a layer's weights by ``factor`` and zero its bias (small last layer of a residual
    branch, so that an untrained network starts close to its skip path)."""
    with torch.no_grad():
        layer.weight.mul_(factor)
        if layer.bias is not None:
            layer.bias.zero_()
