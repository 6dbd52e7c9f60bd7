"""A multi-factor 2D SR network whose features live on the low-resolution grid.

For a through-plane factor ``f`` a refiner that works on the interpolated (fine) grid pays for
``f`` times more voxels than the measured ones. This network instead runs its residual body on
the measured grid and only its last step is fine: per-factor sub-pixel heads (ESPCN's idea;
Shi et al. 2016) shuffle the features up along the thick axis, and the result is added to the
cubic B-spline interpolation of the input, which the network thus corrects. So a body several
times wider costs what the fine-grid refiner costs, one body serves every factor in
``factors`` (each with its own small head), and the B-spline is the same one inference and the
consistency projection use.

Example:
    >>> net = LRRefiner(spatial_dims=2, scale=(1, 2), factors=(2, 4))
    >>> net(torch.rand(1, 1, 16, 8), factor=4).shape
    torch.Size([1, 1, 16, 32])
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
    ``(B, C, H, factor·w)``; ``scale`` is the default factor.

    Args:
        spatial_dims: 2.
        scale: ``(1, f)``: the factor used when ``forward`` is given none.
        factors: inclusive range ``(lo, hi)`` of factors with a head.
        in_channels: image channels.
        features: channels of the body.
        num_blocks: residual blocks in the body.
        kernel_size: odd kernel size.
    """

    name = "lrrefiner"
    takes_factor = True

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], factors: Sequence[int],
                 in_channels: int = 1, features: int = 32, num_blocks: int = 6,
                 kernel_size: int = 3) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        if self.spatial_dims != 2 or self.scale[0] != 1:
            raise ValueError("LRRefiner is 2D with the low-resolution axis last: scale (1, f)")
        lo, hi = (check_int("factors", int(f), minimum=2) for f in factors)
        if hi < lo:
            raise ValueError(f"factors must be a range (lo, hi), got {list(factors)}")
        features = check_int("features", features)
        num_blocks = check_int("num_blocks", num_blocks, minimum=0)
        k = check_kernel("kernel_size", kernel_size)
        self.factors = (lo, hi)
        self.config.update(factors=[lo, hi], features=features, num_blocks=num_blocks,
                           kernel_size=k)
        c = self.in_channels
        self.conv_first = conv(2, c, features, k)
        self.body = nn.Sequential(*(ResidualBlock(2, features, k) for _ in range(num_blocks)))
        self.conv_after_body = conv(2, features, features, k)
        self.heads = nn.ModuleDict()
        for f in range(lo, hi + 1):
            last = conv(2, features, c, k)
            shrink_(last, 0.1)
            self.heads[str(f)] = nn.Sequential(Upsampler(2, features, features, (1, f), k),
                                               nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor, factor: int | None = None) -> torch.Tensor:
        """Upscale the last axis of ``x`` (B, C, H, w) by ``factor`` (default ``scale[-1]``)."""
        self.check_input(x)
        f = int(factor or self.scale[-1])
        base = x @ bspline_matrix(x.shape[-1], f).to(x.device, x.dtype).T
        return base + self.residual(x, f)

    def residual(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """The correction to the B-spline skip: no constant depends on the plane's size, so
        an exported graph of it serves every width (:mod:`medsr.runtime`)."""
        if str(factor) not in self.heads:
            raise ValueError(f"LRRefiner has heads for factors {self.factors}, not {factor}")
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.body(feat))
        return self.heads[str(factor)](feat)
