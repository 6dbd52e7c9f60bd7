"""A network's planes as an ONNX graph (torch's exporter): what :mod:`medsr.runtime` caches.

Imported only where a graph is exported, so that a run whose graph is cached loads no torch.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from medsr.nets import forward

#: the ONNX opset graphs are exported with (part of their cache key)
OPSET = 17


class _Fixed(nn.Module):
    """``model(x, factor=f)`` as a one-input module, for export."""

    def __init__(self, model: nn.Module, factor: int) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, x, self.factor)


class _Residual(_Fixed):
    """``model.residual(x, f)``: the graph without the width-dependent skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.residual(x, self.factor)


def export_planes(model: nn.Module, factor: int, example, residual: bool) -> bytes:
    """The graph of ``model`` ×``factor`` on planes ``(N, C, H, W)`` like ``example`` (an
    array): its residual with every plane axis dynamic, else the whole network with only the
    batch and the first plane axis dynamic."""
    module = (_Residual if residual else _Fixed)(model, factor).eval()
    dynamic = {0: "n", 2: "h", 3: "w"} if residual else {0: "n", 2: "h"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.as_tensor(example),), buffer, input_names=["x"],
                          output_names=["y"], dynamo=False, opset_version=OPSET,
                          dynamic_axes={"x": dynamic, "y": dynamic})
    return buffer.getvalue()
