"""Super-resolution networks (2D or 3D, per-axis integer scale) behind an explicit registry.

Every network takes keyword-only hyperparameters (``spatial_dims``, ``scale``, ``in_channels``
and its own), keeps them in ``net.config`` (JSON-serialisable) and maps a low-resolution tensor
``(B, C, *spatial)`` to ``(B, C, *(spatial[i] * scale[i]))``.

Example:
    >>> net = build_network("edsr", spatial_dims=3, scale=(1, 1, 4))
    >>> same = build_network(**network_config(net))  # same architecture, load net's weights
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from medsr.nets.blocks import interpolate, pixel_shuffle
from medsr.nets.edsr import EDSR
from medsr.nets.espcn import ESPCN
from medsr.nets.lrsr import LRRefiner
from medsr.nets.srcnn import SRCNN
from medsr.nets.vdsr import VDSR

__all__ = ["EDSR", "ESPCN", "NETWORKS", "LRRefiner", "SRCNN", "VDSR", "build_network",
           "forward", "interpolate", "network_config", "pixel_shuffle"]

#: Registry key -> network class. Other classes are reached as ``"package.module:ClassName"``.
NETWORKS: dict[str, type[nn.Module]] = {"srcnn": SRCNN, "vdsr": VDSR, "espcn": ESPCN,
                                        "edsr": EDSR, "lrrefiner": LRRefiner}


def _import_class(path: str) -> type[nn.Module]:
    """Import ``"package.module:ClassName"`` (the class part may be dotted)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"unknown network {path!r}: use one of {sorted(NETWORKS)} "
                         "or 'package.module:ClassName'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"network {path!r}: cannot import module {module_name!r} ({err})") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"network {path!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ValueError(f"network {path!r} is not a torch.nn.Module subclass")
    return obj


def build_network(name: str, **config: Any) -> nn.Module:
    """Build a network from a registry key or a ``"package.module:ClassName"`` path.

    Args:
        name: a key of :data:`NETWORKS` or ``"package.module:ClassName"``; such a class must take
            keyword arguments and should set ``self.config`` (else ``config`` is stored on it).
        **config: the keyword arguments of the class (``spatial_dims``, ``scale``, ...).

    Raises:
        ValueError: unknown name (the message lists the registry keys) or unusable class.
    """
    if name in NETWORKS:
        return NETWORKS[name](**config)
    if ":" not in name:
        raise ValueError(f"unknown network {name!r}: use one of {sorted(NETWORKS)} "
                         "or 'package.module:ClassName'")
    net = _import_class(name)(**config)
    if not hasattr(net, "config"):
        net.config = dict(config)
    return net


def forward(net: nn.Module, x, factor: int):
    """``net(x)``, telling a multi-factor network (``takes_factor``, e.g. LRRefiner) its
    factor; the one place training, validation and inference call networks through."""
    inner = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
    if getattr(inner, "takes_factor", False):
        return net(x, factor=factor)
    return net(x)


def network_config(net: nn.Module) -> dict[str, Any]:
    """``{"name": ..., **net.config}``, so that ``build_network(**network_config(net))`` rebuilds
    the architecture (the name is the registry key, or ``"module:ClassName"`` for other classes).
    """
    cls = type(net)
    name = next((key for key, value in NETWORKS.items() if value is cls), None)
    if name is None:
        if "<locals>" in cls.__qualname__:
            raise ValueError(f"{cls.__qualname__} is defined inside a function and cannot be "
                             "rebuilt")
        name = f"{cls.__module__}:{cls.__qualname__}"
    if not isinstance(getattr(net, "config", None), dict):
        raise ValueError(f"{cls.__qualname__} has no config dict; build it with build_network")
    return {"name": name, **net.config}
