"""MONAI-style transforms: an array transform plus its keyed (dictionary) wrapper."""

from __future__ import annotations

from medsr.transforms.degrade import (
    RandGaussianPSFd,
    RandInPlaned,
    RandKSpaced,
    RandNoised,
    RandSliceProfiled,
    add_noise,
    gaussian_psf,
    kspace_truncate,
    partial_fourier,
    pixel_box,
    simulate_thick_slices,
    slice_profile,
)

_UPSCALE = ("LoadVolume", "LoadVolumed", "Upscale", "Upscaled")


def __getattr__(name: str):
    """The reading/upscaling transforms sit above this package's others (they use
    :mod:`medsr.upscaling`), so they load on first use (PEP 562) and ``medsr.transforms.degrade``
    stays importable from the layers below."""
    if name in _UPSCALE:
        from medsr.transforms import upscale

        return getattr(upscale, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["LoadVolume", "LoadVolumed", "RandGaussianPSFd", "RandInPlaned", "RandKSpaced",
           "RandNoised", "RandSliceProfiled", "Upscale", "Upscaled", "add_noise", "gaussian_psf",
           "kspace_truncate", "partial_fourier", "pixel_box", "simulate_thick_slices",
           "slice_profile"]
