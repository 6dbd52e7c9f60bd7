"""A multi-factor 2D SR network whose features live on the low-resolution grid.

For a through-plane factor ``f`` a refiner that works on the interpolated (fine) grid pays for
``f`` times more voxels than the measured ones. This network instead runs its residual body on
the measured grid and only its last step is fine: per-factor sub-pixel heads (ESPCN's idea;
Shi et al. 2016) shuffle the features up along the thick axis, and the result is added to the
cubic B-spline interpolation of the input, which the network thus corrects. So a body several
times wider costs what the fine-grid refiner costs, one body serves every factor in
``factors`` (each with its own small head), and the B-spline is the same one inference and the
consistency projection use.

With ``lr_axes=2`` both axes of the plane are low resolution (in-plane SR, the setting of
SRCNN/ESPCN): the heads shuffle up both axes and the skip is the separable B-spline.

Example:
    >>> net = LRRefiner(spatial_dims=2, scale=(1, 2), factors=(2, 4))
    >>> net(torch.rand(1, 1, 16, 8), factor=4).shape
    torch.Size([1, 1, 16, 32])
    >>> LRRefiner(spatial_dims=2, scale=(2, 2), factors=(2, 4), lr_axes=2)(
    ...     torch.rand(1, 1, 8, 8), factor=3).shape
    torch.Size([1, 1, 24, 24])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medsr.nets.blocks import SRNet, Upsampler, check_int, check_kernel, conv, shrink_
from medsr.nets.edsr import ResidualBlock

_BSPLINE: dict[tuple[int, int], torch.Tensor] = {}


def bspline_matrix(n: int, factor: int) -> torch.Tensor:
    """The ``(factor·n, n)`` cubic B-spline subdivision matrix of a line (cached)."""
    key = (n, factor)
    if key not in _BSPLINE:
        from medsr.consistency import upsample_matrix

        _BSPLINE[key] = torch.from_numpy(upsample_matrix(n, factor).astype(np.float32))
    return _BSPLINE[key]


class LRRefiner(SRNet):
    """EDSR body on the LR grid + one sub-pixel head per factor + B-spline skip (2D).

    The low-resolution axis is the last one. ``forward(x, factor)`` maps ``(B, C, H, w)`` to
    ``(B, C, H, factor·w)``; ``scale`` is the default factor. With ``lr_axes=2`` both axes
    are: ``(B, C, h, w)`` to ``(B, C, factor·h, factor·w)``.

    Args:
        spatial_dims: 2.
        scale: ``(1, f)``: the factor used when ``forward`` is given none.
        factors: inclusive range ``(lo, hi)`` of factors with a head.
        in_channels: image channels.
        features: channels of the body.
        num_blocks: residual blocks in the body.
        kernel_size: odd kernel size.
        lr_axes: 1 (the last axis is low resolution: through-plane) or 2 (both: in-plane).
    """

    name = "lrrefiner"
    takes_factor = True

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], factors: Sequence[int],
                 in_channels: int = 1, features: int = 32, num_blocks: int = 6,
                 kernel_size: int = 3, lr_axes: int = 1) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        if lr_axes not in (1, 2):
            raise ValueError(f"lr_axes must be 1 or 2, got {lr_axes!r}")
        if self.spatial_dims != 2 or (lr_axes == 1 and self.scale[0] != 1):
            raise ValueError("LRRefiner is 2D with the low-resolution axis last: scale (1, f)")
        if lr_axes == 2 and self.scale[0] != self.scale[1]:
            raise ValueError("an in-plane LRRefiner (lr_axes=2) has one scale: (f, f)")
        self.lr_axes = lr_axes
        lo, hi = (check_int("factors", int(f), minimum=2) for f in factors)
        if hi < lo:
            raise ValueError(f"factors must be a range (lo, hi), got {list(factors)}")
        features = check_int("features", features)
        num_blocks = check_int("num_blocks", num_blocks, minimum=0)
        k = check_kernel("kernel_size", kernel_size)
        self.factors = (lo, hi)
        self.config.update(factors=[lo, hi], features=features, num_blocks=num_blocks,
                           kernel_size=k)
        if lr_axes == 2:  # stored only when set: v0.2 cards rebuild unchanged
            self.config["lr_axes"] = 2
        c = self.in_channels
        self.conv_first = conv(2, c, features, k)
        self.body = nn.Sequential(*(ResidualBlock(2, features, k) for _ in range(num_blocks)))
        self.conv_after_body = conv(2, features, features, k)
        self.heads = nn.ModuleDict()
        for f in range(lo, hi + 1):
            last = conv(2, features, c, k)
            shrink_(last, 0.1)
            self.heads[str(f)] = nn.Sequential(Upsampler(2, features, features,
                                                         (f, f) if lr_axes == 2 else (1, f), k),
                                               nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor, factor: int | None = None) -> torch.Tensor:
        """Upscale the last axis of ``x`` (B, C, H, w) by ``factor`` (default ``scale[-1]``);
        both axes with ``lr_axes=2``."""
        self.check_input(x)
        f = int(factor or self.scale[-1])
        with torch.autocast(x.device.type, enabled=False):  # the skip in float32 always:
            base = self.skip(x.float(), f)  # bf16 would round the image itself (~0.4 %)
        return base + self.residual(x, f)

    def skip(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """The cubic B-spline of ``x`` ×``factor`` along its low-resolution axes."""
        base = x @ bspline_matrix(x.shape[-1], factor).to(x.device, x.dtype).T
        if self.lr_axes == 2:
            base = bspline_matrix(x.shape[-2], factor).to(x.device, x.dtype) @ base
        return base

    def residual(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """The correction to the B-spline skip: no constant depends on the plane's size, so
        an exported graph of it serves every width (:mod:`medsr.runtime`)."""
        if str(factor) not in self.heads:
            raise ValueError(f"LRRefiner has heads for factors {self.factors}, not {factor}")
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.body(feat))
        return self.heads[str(factor)](feat)
