"""medsr: super-resolution of medical volumes (MRI, CT) with exact spatial metadata.

The public names load on first use (PEP 562), so ``import medsr`` (and ``medsr --help``)
costs nothing; torch and MONAI load where a MetaTensor is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsr.errors import MedsrError

if TYPE_CHECKING:
    from medsr.api import upscale
    from medsr.fusion.fuse import fuse
    from medsr.io import load_volume, save_volume

__all__ = ["MedsrError", "__version__", "fuse", "load_volume", "save_volume", "upscale"]
__version__ = "0.11.0"

_LAZY = {"upscale": "medsr.api", "fuse": "medsr.fusion.fuse", "load_volume": "medsr.io",
         "save_volume": "medsr.io"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
