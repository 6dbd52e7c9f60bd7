"""ESPCN (Shi et al., 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medsr.nets.blocks import (SRNet, Upsampler, check_bool, check_int, check_kernel, conv,
                               shrink_)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ESPCN(SRNet):
    """ESPCN in 2D or 3D: features computed on the LR grid (conv-act-conv-act), then a conv to
    ``in_channels * prod(scale)`` channels and an anisotropic pixel shuffle to the HR grid.

    The paper's network is 5-3-3 with 64/32 features and tanh. ``residual=True`` (the default,
    not in the original) adds the linearly interpolated input, so the network learns the
    correction to interpolation. The last conv has ICNR init (no checkerboard at start).

    Args:
        spatial_dims: 2 or 3.
        scale: one positive integer factor per spatial axis, e.g. ``(1, 1, 4)``.
        in_channels: image channels (input = output channels).
        features: channels of the two hidden layers.
        kernel_sizes: odd kernel sizes of the three convolutions.
        activation: ``"tanh"`` (paper) or ``"relu"``.
        residual: add the interpolated input to the output.

    Example:
        >>> net = ESPCN(spatial_dims=3, scale=(2, 1, 3))
        >>> net(torch.rand(1, 1, 8, 8, 4)).shape
        torch.Size([1, 1, 16, 8, 12])
    """

    name = "espcn"

    def __init__(self, *, spatial_dims: int, scale: Sequence[int], in_channels: int = 1,
                 features: Sequence[int] = (64, 32), kernel_sizes: Sequence[int] = (5, 3, 3),
                 activation: str = "tanh", residual: bool = True) -> None:
        super().__init__(spatial_dims, scale, in_channels)
        if len(features) != 2 or len(kernel_sizes) != 3:
            raise ValueError(f"ESPCN needs 2 features and 3 kernel_sizes, got {list(features)}, "
                             f"{list(kernel_sizes)}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        f1, f2 = (check_int(f"features[{i}]", f) for i, f in enumerate(features))
        k1, k2, k3 = (check_kernel(f"kernel_sizes[{i}]", k) for i, k in enumerate(kernel_sizes))
        self.residual = check_bool("residual", residual)
        self.config.update(features=[f1, f2], kernel_sizes=[k1, k2, k3], activation=activation,
                           residual=self.residual)
        d, c, act = self.spatial_dims, self.in_channels, _ACTIVATIONS[activation]
        self.body = nn.Sequential(conv(d, c, f1, k1), act(), conv(d, f1, f2, k2), act())
        self.upsample = Upsampler(d, f2, c, self.scale, k3)
        if self.residual:
            shrink_(self.upsample.conv, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the LR tensor (B, C, *spatial) to (B, C, *(spatial * scale))."""
        self.check_input(x)
        out = self.upsample(self.body(x))
        return self.upsample_input(x) + out if self.residual else out
