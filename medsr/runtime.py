"""Where a 2D network's planes are computed: OpenVINO or ONNX Runtime on a CPU, else PyTorch.

On the project's 2-core CPU, ONNX Runtime runs medsr's plane networks about twice as fast as
PyTorch eager with the same results (largest difference ~2e-7 of the range; measured in
``benchmarks/runtime_speed.py``), and OpenVINO, given the same graph, 1.3x faster again in
float32 and about 5x in bfloat16 on a CPU that multiplies bfloat16 natively (AMX or
AVX-512 BF16): the PSNR of the outputs moved by at most 0.006 dB (``docs/speed.md``). So a
CPU run takes OpenVINO when it is installed, at its default precision (:func:`precision`:
``auto``, bfloat16 where the CPU has it, float32 elsewhere; ``fp32`` keeps float32
everywhere), else ONNX Runtime. A network with a ``residual(x, factor)`` method (the
multi-factor :class:`medsr.nets.lrsr.LRRefiner`) is exported once per factor with every
plane axis dynamic — its B-spline skip, whose matrix depends on the plane's width, is added
outside the graph, in NumPy (:func:`bspline_skip`) — and the graph is kept on disk
(:func:`cache_dir`), so a later process loads it instead of exporting (a few seconds on 2
cores); a cache folder that cannot be written is skipped. Other networks are exported once per
(factor, plane width) and kept for the network's lifetime. ONNX Runtime runs with all its graph
optimisations and torch's thread count (both measured best on 2 cores) and without spinning
threads (``docs/speed.md``). On CUDA, or when ONNX Runtime is missing or the export fails,
PyTorch runs the planes (with bf16 autocast on CUDA).

**A cached graph needs no torch.** Its name (:func:`graph_key`) is computed from what a model
folder holds — the weights file's bytes and the card's architecture — with the factor, the
opset and medsr's version; so when a saved model's graph for the request's factor is on disk,
:func:`cached_network` gives a :class:`GraphNet` that runs it without importing torch (about
2 s of a run on 2 cores). The first run of a model exports with torch and fills the cache.
Planes go in and out as NumPy arrays.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "openvino")
#: ``auto``: reduced precision (bfloat16) where the hardware computes it natively (a CPU's AMX
#: or AVX-512 BF16 units through OpenVINO, CUDA's autocast); ``fp32``: float32 everywhere
PRECISIONS = ("auto", "fp32")
_PRECISION: list[str] = []
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: torch networks loaded from a file: (file's digest, state digest then, card's architecture)
_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: bumped when what goes into a cached graph changes
_GRAPH_VERSION = 2
#: the ONNX opset of exported graphs (:mod:`medsr.export` uses it; here for the key)
OPSET = 17
#: networks whose graph is their residual, one for every plane width (``residual(x, f)``)
WIDTH_FREE = ("lrrefiner",)
#: graphs kept on disk (each self-supervised fit adds one); the least recently used go first
CACHED_GRAPHS = 32

Runner = Callable[[np.ndarray], np.ndarray]


def set_precision(name: str) -> None:
    """Set the networks' arithmetic for this process (:data:`PRECISIONS`); it overrides the
    ``MEDSR_PRECISION`` environment variable. Sessions already made keep theirs."""
    if name not in PRECISIONS:
        from medsr.errors import MedsrError

        raise MedsrError(f"unknown precision {name!r}; use {' or '.join(PRECISIONS)}")
    _PRECISION[:] = [name]


def precision() -> str:
    """The networks' arithmetic: :func:`set_precision`'s, else ``MEDSR_PRECISION``, else
    ``auto``."""
    name = _PRECISION[0] if _PRECISION else os.environ.get("MEDSR_PRECISION") or "auto"
    if name not in PRECISIONS:
        from medsr.errors import MedsrError

        raise MedsrError(f"MEDSR_PRECISION={name!r} is not a precision; use "
                         f"{' or '.join(PRECISIONS)}")
    return name


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16), as OpenVINO
    tells; False without OpenVINO."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - not installed, or no CPU plugin: say no
        return False


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$XDG_CACHE_HOME/medsr/onnx`` (default
    ``~/.cache/medsr/onnx``), the platform's user cache, never inside the package."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "medsr" / "onnx"


def graph_key(weights_digest: str, config: dict, factor: int) -> str:
    """The name of a residual graph: the weights (a digest), the architecture, the factor,
    the opset and medsr's version (no torch needed)."""
    from medsr import __version__

    digest = hashlib.sha256()
    digest.update(json.dumps([_GRAPH_VERSION, OPSET, __version__, int(factor), config],
                             sort_keys=True, default=str).encode())
    digest.update(weights_digest.encode())
    return digest.hexdigest()[:32]


def width_free(model) -> bool:
    """Whether one graph of ``model`` serves every plane width (its B-spline skip outside)."""
    return isinstance(model, GraphNet) or callable(getattr(model, "residual", None))


def bspline_skip(x: np.ndarray, factor: int, lr_axes: int = 1) -> np.ndarray:
    """The cubic B-spline of planes ``(N, C, H, W)`` ×``factor`` along W (and H with
    ``lr_axes=2``): what an LRRefiner's residual corrects (its ``skip``, ``x @ B(W, f)ᵀ``),
    computed as medsr's B-spline upscaling does (4 taps per sample, no BLAS: a multithreaded
    BLAS product between ONNX Runtime's batches cost about 2 s of CPU per run on 2 busy cores,
    its threads spinning)."""
    from medsr.resample import upsample_axis

    n, c, h, w = x.shape
    base = upsample_axis(x.reshape(n * c, h, w), 2, factor, "bspline")
    if lr_axes == 2:
        base = upsample_axis(base, 1, factor, "bspline")
    return base.reshape(n, c, *base.shape[1:])


class GraphNet:
    """A saved width-free network (:data:`WIDTH_FREE`) run from its cached residual graphs,
    without torch: what the inference code needs of it (architecture, reach, graphs).

    Attributes:
        card: the model card; ``config`` its architecture (``card["network"]``).
        radius: the sum of every convolution's reach (:func:`medsr.inference.
            receptive_radius`); ``reach`` counts one head (:func:`medsr.background.plane_reach`).
        graphs: factor -> the graph's bytes (those found in the cache).
    """

    takes_factor = True

    def __init__(self, weights: Path, card: dict, digest: str) -> None:
        from medsr.checkpoint import tensor_shapes

        self.card, self.config, self.digest = card, dict(card["network"]), digest
        self.lr_axes = int(self.config.get("lr_axes", 1))
        self.graphs: dict[int, bytes] = {}
        reach: dict[str, int] = {}
        for name, shape in tensor_shapes(weights).items():
            if name.endswith(".weight") and len(shape) in (4, 5):  # 2D and 3D convolutions
                reach[name] = (max(shape[2:]) - 1) // 2
        heads: dict[str, int] = {}
        for name, r in reach.items():
            if name.startswith("heads."):
                head = name.split(".")[1]
                heads[head] = heads.get(head, 0) + r
        self.radius = sum(reach.values())
        self.reach = self.radius - sum(heads.values()) + max(heads.values(), default=0)

    def path(self, factor: int) -> Path:
        return cache_dir() / f"{graph_key(self.digest, self.config, factor)}.onnx"


def cached_network(weights: Path, card: dict, factor: int) -> GraphNet | None:
    """The saved model as a :class:`GraphNet` when its graph for ``factor`` is in the cache
    (and ONNX Runtime is installed and the network width-free), else None: then torch loads
    it, and its first CPU run exports the graph."""
    network = card.get("network") or {}
    if network.get("name") not in WIDTH_FREE or card.get("input", "lr") != "lr" \
            or engine("auto") is None:
        return None
    from medsr.checkpoint import weights_digest

    net = GraphNet(weights, card, weights_digest(weights))
    path = net.path(factor)
    try:
        net.graphs[int(factor)] = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used
    return net


def remember_weights(model, weights: Path, config: dict) -> None:
    """Note that ``model`` (torch) holds the weights of the file ``weights`` and the card's
    architecture ``config``, so that its graphs are named as :class:`GraphNet`'s (while its
    weights stay those)."""
    from medsr.checkpoint import weights_digest

    _LOADED[model] = (weights_digest(weights), _state_digest(model), dict(config))


def _state_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _graph_key(model, factor: int) -> str:
    """:func:`graph_key` of a torch network: by its file when loaded from one and unchanged
    since (the name a later run finds without torch), else by its weights in memory."""
    state = _state_digest(model)
    loaded = _LOADED.get(model)
    if loaded is not None and loaded[1] == state:
        return graph_key(loaded[0], loaded[2], factor)
    return graph_key(state, getattr(model, "config", {}), factor)


def _store(path: Path, graph: bytes) -> None:
    """Write a graph into the cache atomically (concurrent processes may export the same
    one) and drop the least recently used beyond :data:`CACHED_GRAPHS`."""
    try:
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


def _cached_graph(model, factor: int, example: np.ndarray) -> bytes:
    """The residual graph from the disk cache, else exported (and stored when possible)."""
    from medsr.export import export_planes

    path = cache_dir() / f"{_graph_key(model, factor)}.onnx"
    try:
        graph = path.read_bytes()
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return graph
    except OSError:
        pass
    graph = export_planes(model, factor, example, residual=True)
    _store(path, graph)
    return graph


def _threads() -> int:
    """ONNX Runtime's intra-op threads: torch's count when torch is loaded (a user's
    ``torch.set_num_threads`` holds), else ``OMP_NUM_THREADS``, else 0: ONNX Runtime's
    default, the physical cores (torch's default too)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    with contextlib.suppress(ValueError):
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    return 0


def engine(backend: str) -> str | None:
    """The CPU engine that ``backend`` runs a graph with (``"openvino"``, ``"onnx"``), or None
    (PyTorch): ``auto`` takes OpenVINO when installed, else ONNX Runtime."""
    if backend == "torch":
        return None
    for name, module in (("openvino", "openvino"), ("onnx", "onnxruntime")):
        if backend in ("auto", name) and importlib.util.find_spec(module) is not None:
            return name
    return None


def _new_session(graph: bytes, kind: str = "onnx", fallback: bool = True):
    """A session running ``graph``: ``.run(None, {"x": planes})`` gives ``[fine planes]``.
    An OpenVINO session that cannot be made falls back to ONNX Runtime when ``fallback``."""
    if kind == "openvino":
        try:
            return _OpenVino(graph)
        except Exception as err:  # noqa: BLE001 - any OpenVINO failure: ONNX Runtime runs it
            if not fallback or importlib.util.find_spec("onnxruntime") is None:
                raise
            logger.info("OpenVINO could not compile the graph (%s); running ONNX Runtime",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    # idle threads sleep instead of spinning: on a shared 2-core machine (load 14)
    # this was 17 % faster (docs/speed.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class _OpenVino:
    """An ONNX graph compiled by OpenVINO for the CPU, run as an ONNX Runtime session is.

    At precision ``auto`` OpenVINO picks its CPU default: bfloat16 inside the network where
    the CPU multiplies it natively, float32 elsewhere; inputs and outputs stay float32.
    """

    def __init__(self, graph: bytes) -> None:
        import threading

        import openvino as ov

        config: dict = {"INFERENCE_PRECISION_HINT": "f32"} if precision() == "fp32" else {}
        threads = _threads()
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(graph, b""), "CPU", config)
        #: what the network computes in: "bf16" or "f32"
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        logger.info("plane network: OpenVINO, %s", self.precision)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request serves one call at a time

    def run(self, names, feeds: dict) -> list[np.ndarray]:  # noqa: ARG002 - ORT's signature
        with self._lock:
            self._request.infer(feeds)
            return [self._request.get_output_tensor(0).data.copy()]


def _onnx_session(model, factor: int, example: np.ndarray, kind: str = "onnx",
                  fallback: bool = True):
    """A session of ``kind`` (:func:`engine`) for planes ``(N, C, H, W)`` of this width, or
    None."""
    cache = _SESSIONS.setdefault(model, {})
    free = width_free(model)
    key = (factor, None if free else int(example.shape[-1]), kind, precision())
    if key not in cache:
        if isinstance(model, GraphNet):
            if factor not in model.graphs:
                raise RuntimeError(f"no cached graph of this model for ×{factor}")
            cache[key] = _new_session(model.graphs[factor], kind, fallback)
            return cache[key]
        try:
            from medsr.export import export_planes

            graph = (_cached_graph(model, factor, example) if free else
                     export_planes(model, factor, example, residual=False))
            cache[key] = _new_session(graph, kind, fallback)
        except Exception as err:  # noqa: BLE001 - any export failure falls back to PyTorch
            logger.info("ONNX export failed (%s); running the network in PyTorch",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            cache[key] = None
    return cache[key]


def _torch_runner(model, device, factor: int) -> Runner:
    import torch

    from medsr.nets import forward

    amp = device.type == "cuda" and precision() != "fp32"

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        t = t.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16 if amp
                                             else torch.float32, enabled=amp):
            return forward(model, t, factor).float().cpu().numpy()

    return run


def plane_runner(model, device, factor: int, example: np.ndarray, backend: str = "auto"
                 ) -> Runner:
    """A function mapping planes ``(N, C, H, W)`` to fine planes ``(N, C, H', W')`` (float32
    arrays, on the CPU).

    Args:
        model: a 2D network (``takes_factor`` networks get ``factor``), or a
            :class:`GraphNet` (ONNX Runtime on the CPU only).
        device: where it runs (a torch device, or ``"cpu"``); ONNX Runtime is used only on
            the CPU.
        factor: the upscaling factor.
        example: a batch of planes of the width that will be run (for the export).
        backend: ``"auto"`` (on a CPU OpenVINO, else ONNX Runtime, when installed),
            ``"torch"``, ``"onnx"`` (ONNX Runtime) or ``"openvino"`` (an error when it
            cannot run). OpenVINO and CUDA compute at :func:`precision`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    cpu = str(getattr(device, "type", device)) == "cpu"
    graph = isinstance(model, GraphNet)
    if graph and (backend == "torch" or not cpu):
        raise ValueError("a cached graph runs in OpenVINO or ONNX Runtime on the CPU")
    kind = engine(backend) if cpu else None
    if kind is not None:
        session = _onnx_session(model if graph else model.eval(), factor,
                                np.ascontiguousarray(example, dtype=np.float32), kind,
                                fallback=backend == "auto")
        if session is not None and width_free(model):
            lr_axes = model.lr_axes if graph else int(getattr(model, "lr_axes", 1))

            def run(x: np.ndarray) -> np.ndarray:
                x = np.ascontiguousarray(x, dtype=np.float32)
                y = session.run(None, {"x": x})[0]
                y += bspline_skip(x, factor, lr_axes)
                return y

            return run
        if session is not None:
            def run(x: np.ndarray) -> np.ndarray:
                return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

            return run
    if backend in ("onnx", "openvino") and cpu:
        raise RuntimeError(f"{'ONNX Runtime' if backend == 'onnx' else 'OpenVINO'} is not "
                           "available for this network")
    return _torch_runner(model, device, factor)
