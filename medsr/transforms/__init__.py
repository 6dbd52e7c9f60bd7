"""MONAI-style transforms: an array transform plus its keyed (dictionary) wrapper."""

from __future__ import annotations

from medsr.transforms.upscale import LoadVolume, LoadVolumed, Upscale, Upscaled

__all__ = ["LoadVolume", "LoadVolumed", "Upscale", "Upscaled"]
