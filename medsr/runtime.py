"""Where a 2D network's planes are computed: ONNX Runtime on a CPU, else PyTorch.

On the project's 2-core CPU, ONNX Runtime runs medsr's plane networks about twice as fast as
PyTorch eager with the same results (largest difference ~2e-7 of the range; measured in
``benchmarks/runtime_speed.py``). A network is exported once per (factor, plane width) — the
thick axis's length is fixed within a volume, so shape-dependent constants such as the
B-spline matrix of :class:`medsr.nets.lrsr.LRRefiner` stay exact — with the batch and the
other plane axis dynamic, and kept for the network's lifetime. On CUDA, or when ONNX Runtime
is missing or the export fails, PyTorch runs the planes (with bf16 autocast on CUDA).
"""

from __future__ import annotations

import io
import logging
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from medsr.nets import forward

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Fixed(nn.Module):
    """``model(x, factor=f)`` as a one-input module, for export."""

    def __init__(self, model: nn.Module, factor: int) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, x, self.factor)


def _torch_runner(model: nn.Module, device: torch.device, factor: int
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    amp = device.type == "cuda"
    fixed = _Fixed(model, factor)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16 if amp
                                             else torch.float32, enabled=amp):
            return fixed(x).float().cpu()

    return run


def _onnx_session(model: nn.Module, factor: int, example: torch.Tensor):
    """An ONNX Runtime session for planes ``(N, C, H, W)`` of this width, or None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    cache = _SESSIONS.setdefault(model, {})
    # an in-plane network's B-spline skip depends on both plane axes: both are fixed
    plane = getattr(model, "lr_axes", 1) == 2
    key = (factor, int(example.shape[-1])) + ((int(example.shape[-2]),) if plane else ())
    dynamic = {0: "n"} if plane else {0: "n", 2: "h"}
    if key not in cache:
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_Fixed(model, factor).eval(), (example,), buffer,
                                  input_names=["x"], output_names=["y"], dynamo=False,
                                  dynamic_axes={"x": dynamic, "y": dynamic})
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.log_severity_level = 3
            cache[key] = ort.InferenceSession(buffer.getvalue(), options,
                                              providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - any export failure falls back to PyTorch
            logger.info("ONNX export failed (%s); running the network in PyTorch",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            cache[key] = None
    return cache[key]


def plane_runner(model: nn.Module, device: torch.device, factor: int, example: torch.Tensor,
                 backend: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping planes ``(N, C, H, W)`` to fine planes ``(N, C, H', W')`` on the CPU.

    Args:
        model: a 2D network (``takes_factor`` networks get ``factor``).
        device: where it runs; ONNX Runtime is used only on the CPU.
        factor: the upscaling factor.
        example: a batch of planes of the width that will be run (for the export).
        backend: ``"auto"`` (ONNX Runtime on a CPU when available), ``"torch"`` or ``"onnx"``
            (an error when it cannot run).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "torch" and device.type == "cpu":
        session = _onnx_session(model.eval(), factor, example.contiguous())
        if session is not None:
            def run(x: torch.Tensor) -> torch.Tensor:
                y = session.run(None, {"x": x.contiguous().numpy()})[0]
                return torch.from_numpy(y)

            return run
        if backend == "onnx":
            raise RuntimeError("ONNX Runtime is not available for this network")
    return _torch_runner(model, device, factor)
