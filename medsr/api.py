"""The Python API that the CLI wraps: ``upscale``, ``load_volume``, ``save_volume``."""

from __future__ import annotations

from medsr.io import load_volume, save_volume
from medsr.upscaling import METHODS, PROFILES
from medsr.upscaling import upscale_volume as upscale

__all__ = ["METHODS", "PROFILES", "load_volume", "save_volume", "upscale"]
