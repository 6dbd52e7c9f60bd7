"""Where networks run: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from medsr.errors import MedsrError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; a CUDA request without a GPU is an error."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedsrError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise MedsrError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)
