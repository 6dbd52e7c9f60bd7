"""Where a 2D network's planes are computed: ONNX Runtime on a CPU, else PyTorch.

On the project's 2-core CPU, ONNX Runtime runs medsr's plane networks about twice as fast as
PyTorch eager with the same results (largest difference ~2e-7 of the range; measured in
``benchmarks/runtime_speed.py``). A network with a ``residual(x, factor)`` method (the
multi-factor :class:`medsr.nets.lrsr.LRRefiner`) is exported once per factor with every
plane axis dynamic — its B-spline skip, whose matrix depends on the plane's width, is added
outside the graph — and the graph is kept on disk (:func:`cache_dir`, keyed by the weights,
the factor and the torch version), so a later process loads it instead of exporting (a few
seconds on 2 cores); a cache folder that cannot be written is skipped. Other networks are
exported once per (factor, plane width) and kept for the network's lifetime. ONNX Runtime
runs with all its graph optimisations and torch's thread count (both measured best on 2
cores) and without spinning threads (``docs/speed.md``). On CUDA, or when ONNX Runtime is
missing or the export fails, PyTorch runs the planes (with bf16 autocast on CUDA).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medsr.nets import forward

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: bumped when what goes into a cached graph changes
_GRAPH_VERSION = 1
#: graphs kept on disk (each self-supervised fit adds one); the least recently used go first
CACHED_GRAPHS = 32


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$XDG_CACHE_HOME/medsr/onnx`` (default
    ``~/.cache/medsr/onnx``), the platform's user cache, never inside the package."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "medsr" / "onnx"


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


def _graph_key(model: nn.Module, factor: int) -> str:
    """A name for a network's residual graph: its weights, hyperparameters, the factor and
    the torch version that exports it."""
    digest = hashlib.sha256()
    digest.update(json.dumps([_GRAPH_VERSION, factor, torch.__version__,
                              getattr(model, "config", {})], sort_keys=True,
                             default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _export(module: nn.Module, example: torch.Tensor, dynamic: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, input_names=["x"],
                          output_names=["y"], dynamo=False,
                          dynamic_axes={"x": dynamic, "y": dynamic})
    return buffer.getvalue()


def _cached_graph(model: nn.Module, factor: int, example: torch.Tensor) -> bytes:
    """The residual graph from the disk cache, else exported (and stored when possible)."""
    path = cache_dir() / f"{_graph_key(model, factor)}.onnx"
    try:
        graph = path.read_bytes()
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return graph
    except OSError:
        pass
    graph = _export(_Residual(model, factor), example, {0: "n", 2: "h", 3: "w"})
    try:  # atomically: concurrent processes may export the same graph
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(graph)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        kept = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-CACHED_GRAPHS]:
            old.unlink(missing_ok=True)
    except OSError as err:
        logger.info("ONNX graph not cached in %s (%s)", path.parent, err.strerror or err)
    return graph


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
    width_free = callable(getattr(model, "residual", None))
    key = (factor, None if width_free else int(example.shape[-1]))
    if key not in cache:
        try:
            graph = (_cached_graph(model, factor, example) if width_free else
                     _export(_Fixed(model, factor), example, {0: "n", 2: "h"}))
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            # idle threads sleep instead of spinning: on a shared 2-core machine (load 14)
            # this was 17 % faster (docs/speed.md)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            cache[key] = ort.InferenceSession(graph, options,
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
        if session is not None and callable(getattr(model, "residual", None)):
            def run(x: torch.Tensor) -> torch.Tensor:
                x = x.contiguous()
                y = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
                return y.add_(model.skip(x, factor))

            return run
        if session is not None:
            def run(x: torch.Tensor) -> torch.Tensor:
                y = session.run(None, {"x": x.contiguous().numpy()})[0]
                return torch.from_numpy(y)

            return run
        if backend == "onnx":
            raise RuntimeError("ONNX Runtime is not available for this network")
    return _torch_runner(model, device, factor)
