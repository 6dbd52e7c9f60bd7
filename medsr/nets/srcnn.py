"""SRCNN (Dong et al., 2014, "Learning a Deep Convolutional Network for Image Super-Resolution")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsr.nets.blocks import SRNet, check_bool, check_int, check_kernel, conv, shrink_


class SRCNN(SRNet):
    """SRCNN in 2D or 3D: linear interpolation to the output grid, then conv-ReLU-conv-ReLU-conv.

    The default is the paper's 9-1-5 network with 64/32 features. The original predicts the HR
    image directly; ``residual=True`` (the default here) adds the interpolated input to the
    output, so the network learns the correction to linear interpolation (faster to train).

    Args:
        spatial_dims: 2 or 3.
        scale: one positive integer factor per spatial axis, e.g. ``(1, 1, 4)``.
        in_channels: image channels (input = output channels).
        features: channels of the two hidden layers.
        kernel_sizes: odd kernel sizes of the three convolutions.
        residual: add the interpolated input to the output (not in the original).

    Example:
        >>> net = SRCNN(spatial_dims=3, scale=(1, 1, 4))
        >>> net(torch.rand(1, 1, 16, 16, 4)).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    name = "srcnn"

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], in_channels: int = 1,
                 features: Sequence[int] = (64, 32), kernel_sizes: Sequence[int] = (9, 1, 5),
                 residual: bool = True) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        if len(features) != 2 or len(kernel_sizes) != 3:
            raise ValueError(f"SRCNN needs 2 features and 3 kernel_sizes, got {list(features)}, "
                             f"{list(kernel_sizes)}")
        f1, f2 = (check_int(f"features[{i}]", f) for i, f in enumerate(features))
        k1, k2, k3 = (check_kernel(f"kernel_sizes[{i}]", k) for i, k in enumerate(kernel_sizes))
        self.residual = check_bool("residual", residual)
        self.config.update(features=[f1, f2], kernel_sizes=[k1, k2, k3], residual=self.residual)
        d, c = self.spatial_dims, self.in_channels
        self.body = nn.Sequential(conv(d, c, f1, k1), nn.ReLU(inplace=True),
                                  conv(d, f1, f2, k2), nn.ReLU(inplace=True),
                                  conv(d, f2, c, k3))
        if self.residual:
            shrink_(self.body[-1], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the LR tensor (B, C, *spatial) to (B, C, *(spatial * scale))."""
        self.check_input(x)
        up = self.upsample_input(x)
        out = self.body(up)
        return up + out if self.residual else out
