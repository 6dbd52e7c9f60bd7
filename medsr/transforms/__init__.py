"""MONAI-style transforms: an array transform plus its keyed (dictionary) wrapper."""

from __future__ import annotations

from medsr.transforms.degrade import (RandGaussianPSFd, RandKSpaced, RandNoised,
                                      RandSliceProfiled, add_noise, gaussian_psf,
                                      kspace_truncate, simulate_thick_slices, slice_profile)
from medsr.transforms.upscale import LoadVolume, LoadVolumed, Upscale, Upscaled

__all__ = ["LoadVolume", "LoadVolumed", "RandGaussianPSFd", "RandKSpaced", "RandNoised",
           "RandSliceProfiled", "Upscale", "Upscaled", "add_noise", "gaussian_psf",
           "kspace_truncate", "simulate_thick_slices", "slice_profile"]
