"""Self-describing model folders and resumable training state, without pickle.

A model folder holds ``weights.safetensors`` (the network), ``card.json`` (architecture and
hyperparameters, scale, intensity normalisation, training data, validation metrics) and, when
trained here, ``config.yaml`` (the experiment). Training state (optimiser, scheduler, RNG,
step) is ``state.safetensors`` + ``state.json``. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsr.errors import MedsrError

if TYPE_CHECKING:  # torch loads where a network is built or saved: reading a card, or
    import torch  # running a cached graph (:mod:`medsr.runtime`), needs none
    from torch import nn

CARD = "card.json"
WEIGHTS = "weights.safetensors"
STATE = "state.safetensors"
STATE_JSON = "state.json"
CARD_FORMAT = "medsr-model/1"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the model from others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically."""
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def save_model(model: nn.Module, folder: Path, card: dict) -> None:
    """Write ``weights.safetensors`` and ``card.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(folder / WEIGHTS, lambda tmp: save_file(weights, tmp))
    from medsr import __version__

    write_json(folder / CARD, {"format": CARD_FORMAT, "medsr_version": __version__, **card})


def model_location(path: str | Path) -> Path:
    """``path``, or, for a bare name that is no path, the shipped model of that name
    (``default_mr``, ``default_mr_coarse``, ...: the folders of :mod:`medsr.models`)."""
    path = Path(path)
    if not path.exists() and len(path.parts) == 1:
        from medsr.models import MODELS_DIR

        if (MODELS_DIR / path.name / WEIGHTS).is_file():
            return MODELS_DIR / path.name
    return path


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, card)`` for a model folder or a ``.safetensors`` file with a card beside it
    (or a shipped model's name: :func:`model_location`)."""
    path = model_location(path)
    weights = path / WEIGHTS if path.is_dir() else path
    card = weights.with_name(CARD)
    if not weights.is_file():
        raise MedsrError(f"no model weights at {weights}")
    if not card.is_file():
        raise MedsrError(f"model {weights} has no {CARD} beside it")
    return weights, card


def read_card(path: str | Path) -> tuple[Path, dict]:
    """``(weights file, card)`` of a model folder (or its ``.safetensors`` file), without
    building the network."""
    weights, card_path = model_paths(path)
    try:
        card = json.loads(card_path.read_text())
        dict(card["network"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MedsrError(f"cannot load model {path}: {str(err).splitlines()[0]}") from None
    return weights, card


def weights_digest(weights: Path) -> str:
    """SHA-256 of a weights file's bytes: what names its exported graphs (:mod:`medsr.runtime`)."""
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def tensor_shapes(weights: Path) -> dict[str, list[int]]:
    """The shape of every tensor in a safetensors file, read from its JSON header (no torch).

    Raises:
        MedsrError: not a safetensors file.
    """
    try:
        with open(weights, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        raise MedsrError(f"cannot read model weights {weights}: {err}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a network from its card and load its weights (safetensors, no pickle)."""
    from safetensors.torch import load_file

    from medsr.nets import build_network
    from medsr.runtime import remember_weights

    weights, card = read_card(path)
    try:
        model = build_network(**dict(card["network"]))
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:  # a bad card too
        raise MedsrError(f"cannot load model {path}: {str(err).splitlines()[0]}") from None
    remember_weights(model, weights, card["network"])
    return model.to(device).eval(), card


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    import torch

    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(p): dict(v) for p, v in meta["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state``'s tensors under ``prefix``, on the CPU and contiguous, for one state file."""
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def _unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def latest_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The network's weights in a run's training state (its latest checkpoint): their moving
    average when the run keeps one (``optim.ema``)."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / STATE), device="cpu")
    return _unprefixed(tensors, "ema.module.") or _unprefixed(tensors, "model.")


def save_training_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, info: dict, ema: nn.Module | None = None) -> None:
    """Everything needed to continue exactly: weights, optimiser, scheduler, RNG, step, and
    the moving average of the weights (``ema``) when there is one."""
    import torch
    from safetensors.torch import save_file

    tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(_prefixed(model.state_dict(), "model."))
    if ema is not None:
        tensors.update(_prefixed(ema.state_dict(), "ema."))
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {"optimizer": optim_meta, "scheduler": scheduler.state_dict() if scheduler else None,
            **info}
    _atomic_write(folder / STATE, lambda tmp: save_file(tensors, tmp))
    write_json(folder / STATE_JSON, meta)


def load_training_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, ema: nn.Module | None = None) -> dict:
    """Restore what :func:`save_training_state` wrote; returns its ``info`` dict. An ``ema``
    whose average was not saved (a run started without one) starts from the weights."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(folder / STATE), device="cpu")
    meta = json.loads((folder / STATE_JSON).read_text())
    model.load_state_dict(_unprefixed(tensors, "model."))
    averaged = _unprefixed(tensors, "ema.")
    if ema is not None and averaged:
        ema.load_state_dict(averaged)
    elif ema is not None:
        ema.module.load_state_dict(model.state_dict())
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta.pop("optimizer")))
    sched = meta.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return meta
