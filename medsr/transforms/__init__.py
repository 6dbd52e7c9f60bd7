"""MONAI-style transforms: an array transform plus its keyed (dictionary) wrapper.

Every name loads on first use (PEP 562): the deterministic degradations
(:mod:`medsr.transforms.degrade`) need no MONAI, the random keyed transforms
(:mod:`medsr.transforms.random_degrade`) do, and the reading/upscaling transforms
(:mod:`medsr.transforms.upscale`) sit above this package's others (they use
:mod:`medsr.upscaling`), so ``medsr.transforms.degrade`` stays importable from the layers below
and an inference run does not pay for ``import monai``.
"""

from __future__ import annotations

from importlib import import_module

_WHERE = {
    "degrade": ("add_noise", "gaussian_psf", "kspace_truncate", "partial_fourier", "pixel_box",
                "simulate_thick_slices", "slice_profile"),
    "random_degrade": ("RandGaussianPSFd", "RandInPlaned", "RandKSpaced", "RandNoised",
                       "RandSliceProfiled"),
    "upscale": ("LoadVolume", "LoadVolumed", "Upscale", "Upscaled"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}


def __getattr__(name: str):
    """A transform from the module that defines it, loaded on first use."""
    if name in _MODULE:
        return getattr(import_module(f"medsr.transforms.{_MODULE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULE)
