"""VDSR (Kim et al., 2016, "Accurate Image Super-Resolution Using Very Deep Convolutional
Networks")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsr.nets.blocks import SRNet, check_int, check_kernel, conv, shrink_


class VDSR(SRNet):
    """VDSR in 2D or 3D: ``depth`` convolutions (ReLU after all but the last) on the linearly
    interpolated input, whose output is added to that input (global residual learning).

    He initialisation as in the paper; the last layer starts small so that an untrained network
    is close to linear interpolation (the paper instead trains with a high rate and clipping).

    Args:
        spatial_dims: 2 or 3.
        scale: one positive integer factor per spatial axis, e.g. ``(1, 1, 4)``.
        in_channels: image channels (input = output channels).
        features: channels of the hidden layers (64 in the paper).
        depth: number of convolutions, >= 2 (20 in the paper; e.g. 8 for CPU budgets).
        kernel_size: odd kernel size of every convolution.

    Example:
        >>> net = VDSR(spatial_dims=2, scale=(1, 4), depth=8)
        >>> net(torch.rand(2, 1, 32, 8)).shape
        torch.Size([2, 1, 32, 32])
    """

    name = "vdsr"

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], in_channels: int = 1,
                 features: int = 64, depth: int = 20, kernel_size: int = 3) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        features = check_int("features", features)
        depth = check_int("depth", depth, minimum=2)
        kernel_size = check_kernel("kernel_size", kernel_size)
        self.config.update(features=features, depth=depth, kernel_size=kernel_size)
        d, c = self.spatial_dims, self.in_channels
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layer = conv(d, c if i == 0 else features, features, kernel_size)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
            layers += [layer, nn.ReLU(inplace=True)]
        layers.append(conv(d, features, c, kernel_size))
        shrink_(layers[-1], 0.1)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the LR tensor (B, C, *spatial) to (B, C, *(spatial * scale))."""
        self.check_input(x)
        up = self.upsample_input(x)
        return up + self.body(up)
