"""medsr: super-resolution of medical volumes (MRI, CT) with exact spatial metadata."""

from __future__ import annotations

from medsr.api import upscale
from medsr.errors import MedsrError
from medsr.io import load_volume, save_volume

__all__ = ["MedsrError", "load_volume", "save_volume", "upscale", "__version__"]
__version__ = "0.2.0"
