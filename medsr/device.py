"""Where networks run: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from medsr.errors import MedsrError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; a CUDA request without a GPU is an error."""
    import torch

    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedsrError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise MedsrError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def surely_cpu(name: object) -> bool:
    """Whether ``name`` resolves to the CPU, known without loading torch: ``cpu``, or ``auto``
    on a machine without an NVIDIA or AMD ROCm driver (where torch could find no CUDA
    device). When this is False, :func:`resolve_device` decides."""
    name = str(name)
    if name == "cpu":
        return True
    if name != "auto":
        return False
    return not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")
                or os.path.exists("/dev/kfd")  # ROCm: torch.cuda serves AMD GPUs too
                or shutil.which("nvidia-smi") is not None)
