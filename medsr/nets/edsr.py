"""EDSR-style network (Lim et al., 2017, "Enhanced Deep Residual Networks for Single Image
Super-Resolution"), in the shape of BasicSR's ``edsr_arch``, for 2D or 3D and per-axis factors."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from medsr.nets.blocks import (SRNet, Upsampler, check_bool, check_int, check_kernel, conv,
                               shrink_)


class ResidualBlock(nn.Module):
    """Residual block without batch norm: ``x + res_scale * conv(relu(conv(x)))``."""

    def __init__(self, spatial_dims: int, features: int, kernel_size: int = 3,
                 res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = conv(spatial_dims, features, features, kernel_size)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(spatial_dims, features, features, kernel_size)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(self.relu(self.conv1(x)))


class EDSR(SRNet):
    """EDSR in 2D or 3D: conv_first -> ``num_blocks`` residual blocks (no batch norm) -> conv,
    plus the skip from conv_first -> sub-pixel upsampler (ICNR init, one anisotropic pixel shuffle
    for any factor) -> conv_last; with ``residual=True`` the linearly interpolated input is added,
    so the network learns the correction to interpolation (much faster to train on small budgets).

    ``res_scale`` defaults to 1.0 as in the paper's baseline (the paper uses 0.1 only for its wide
    256-feature model, where training is otherwise unstable). conv_last starts small, so an
    untrained network is close to linear interpolation. No mean shift: inputs are normalised.

    Args:
        spatial_dims: 2 or 3.
        scale: one positive integer factor per spatial axis, e.g. ``(1, 1, 4)``.
        in_channels: image channels (input = output channels).
        features: channels of the feature maps.
        num_blocks: number of residual blocks (>= 0).
        res_scale: factor on each block's residual branch.
        kernel_size: odd kernel size of every convolution.
        residual: add the interpolated input to the output.

    Example:
        >>> net = EDSR(spatial_dims=3, scale=(1, 1, 4))
        >>> net(torch.rand(1, 1, 16, 16, 4)).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    name = "edsr"

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], in_channels: int = 1,
                 features: int = 32, num_blocks: int = 8, res_scale: float = 1.0,
                 kernel_size: int = 3, residual: bool = True) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        features = check_int("features", features)
        num_blocks = check_int("num_blocks", num_blocks, minimum=0)
        kernel_size = check_kernel("kernel_size", kernel_size)
        if isinstance(res_scale, bool) or not isinstance(res_scale, numbers.Real) \
                or not 0 < res_scale < float("inf"):
            raise ValueError(f"res_scale must be a positive number, got {res_scale!r}")
        self.residual = check_bool("residual", residual)
        self.config.update(features=features, num_blocks=num_blocks, res_scale=float(res_scale),
                           kernel_size=kernel_size, residual=self.residual)
        d, c, k = self.spatial_dims, self.in_channels, kernel_size
        self.conv_first = conv(d, c, features, k)
        self.body = nn.Sequential(*(ResidualBlock(d, features, k, float(res_scale))
                                    for _ in range(num_blocks)))
        self.conv_after_body = conv(d, features, features, k)
        self.upsample = Upsampler(d, features, features, self.scale, k)
        self.conv_last = conv(d, features, c, k)
        if self.residual:
            shrink_(self.conv_last, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the LR tensor (B, C, *spatial) to (B, C, *(spatial * scale))."""
        self.check_input(x)
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.body(feat))
        out = self.conv_last(self.upsample(feat))
        return self.upsample_input(x) + out if self.residual else out
