"""Simulated low-resolution acquisitions: training pairs (random, seeded) and evaluation copies.

Deterministic functions work on tensors ``(C, *spatial)`` with 2 or 3 spatial dims, any float
dtype, CPU or CUDA; ``axis`` counts spatial axes. They never modify their input. A MetaTensor
input gives a MetaTensor whose affine follows :mod:`medsr.geometry`'s convention: LR voxel
``k`` along a subsampled axis covers HR voxels ``k*f .. k*f+f-1`` and is centred at HR index
``k*f + (f-1)/2`` (LR affine = HR affine @ T, ``T[a, a] = f``, ``T[a, 3] = (f-1)/2``).

Conventions:
    * Boundary: replicate (edge voxels repeated); a box of thickness == factor never needs it.
    * Even factors: the profile is sampled around the exact half-integer centre, so every
      kernel is symmetric about the LR voxel centre (no half-voxel shift, no interpolation).
    * Gaussian kernels are point samples of the Gaussian, truncated at ±3 sigma, normalised.
    * k-space: the kept band is ``|nu| <= 1/(2f)`` cycles per voxel (symmetric, so real stays
      real; ``f = 1`` is the identity); ``downsample=True`` samples that band-limited image at
      the LR centres exactly and scales by ``m/n`` so a constant keeps its value.

The random keyed transforms that draw training pairs from these functions are in
:mod:`medsr.transforms.random_degrade` (and ``medsr.transforms``). This module loads MONAI
only where a MetaTensor is made or MONAI's filtering runs: inference uses its functions, and
``import monai`` loads every MONAI subpackage (seconds).
"""

from __future__ import annotations

import copy
import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medsr.transforms.kernels import (  # noqa: F401 - PROFILES, profile_kernel: public here too
    FWHM_PER_SIGMA,
    PROFILES,
    TRUNCATE,
    check_factor,
    profile_kernel,
)

_factor = check_factor


def _dim(x: torch.Tensor, axis: int) -> int:
    """Tensor dimension of spatial ``axis`` (channel-first input, 2 or 3 spatial dims)."""
    nsp = x.ndim - 1
    if nsp not in (2, 3):
        raise ValueError(f"expected (C, *spatial) with 2 or 3 spatial dims, got {tuple(x.shape)}")
    if not -nsp <= axis < nsp:
        raise ValueError(f"spatial axis {axis} out of range for {nsp} spatial dims")
    return axis % nsp + 1


def _is_meta(x: Any) -> bool:
    """Whether ``x`` is a MONAI MetaTensor; none can exist before MONAI is imported, so this
    does not import it."""
    module = sys.modules.get("monai.data.meta_tensor")
    return module is not None and isinstance(x, module.MetaTensor)


def _plain(x: torch.Tensor) -> torch.Tensor:
    """Plain float tensor (MetaTensor overhead dropped; integers become float32)."""
    x = x.as_tensor() if _is_meta(x) else torch.as_tensor(x)
    return x if x.is_floating_point() or x.is_complex() else x.float()


def _like(out: torch.Tensor, ref: torch.Tensor, factors: Mapping[int, int] | None = None
          ) -> torch.Tensor:
    """Wrap ``out`` like ``ref``; a grid subsampled by ``factors`` {spatial axis: f} gets the
    affine of the geometry convention."""
    if not _is_meta(ref):
        return out
    from monai.data import MetaTensor

    meta = copy.deepcopy({k: v for k, v in ref.meta.items() if k != "affine"})
    affine = np.asarray(ref.affine.detach().cpu(), dtype=np.float64)
    t = np.eye(affine.shape[0])
    for a, f in (factors or {}).items():
        if a < affine.shape[0] - 1:
            t[a, a], t[a, -1] = f, (f - 1) / 2.0
    if factors and "spatial_shape" in meta:
        meta["spatial_shape"] = np.asarray(out.shape[1:])
    return MetaTensor(out, affine=torch.as_tensor(affine @ t), meta=meta,
                      applied_operations=copy.deepcopy(ref.applied_operations))


def slice_profile(x: torch.Tensor, axis: int, factor: int, thickness: float | None = None,
                  profile: str = "box") -> torch.Tensor:
    """Thick slices every ``factor`` HR voxels along spatial ``axis``.

    LR slice ``k`` is the profile (see :func:`profile_kernel`) centred at HR index
    ``k*factor + (factor-1)/2``; output length ``n // factor`` (the incomplete tail is dropped);
    replicate boundary. A box with ``thickness == factor`` is exactly the mean of the slices
    ``k*f .. k*f+f-1``.

    Example:
        >>> lr = slice_profile(torch.rand(1, 64, 64, 60), axis=2, factor=5)   # (1, 64, 64, 12)
    """
    f = _factor(factor)
    dim = _dim(x, axis)
    data = _plain(x)
    n = data.shape[dim]
    m = n // f
    if m < 1:
        raise ValueError(f"axis {axis} has {n} voxels, fewer than the factor {f}")
    d, w = profile_kernel(f, thickness, profile)
    start = int(round(d[0] + (f - 1) / 2.0))
    idx = (torch.arange((m - 1) * f + len(w), device=data.device) + start).clamp_(0, n - 1)
    taps = data.movedim(dim, -1).index_select(-1, idx).unfold(-1, len(w), f)
    out = taps @ torch.as_tensor(w, dtype=data.dtype, device=data.device)
    return _like(out.movedim(-1, dim).contiguous(), x, {dim - 1: f})


def _kspace_axis(z: torch.Tensor, dim: int, f: int, downsample: bool) -> torch.Tensor:
    n = z.shape[dim]
    if downsample:
        m = n // f
        if m < 1:
            raise ValueError(f"an axis has {n} voxels, fewer than the factor {f}")
        n = m * f
        z = z.narrow(dim, 0, n)  # drop the incomplete tail, as slice_profile does
    k = (torch.arange(n, device=z.device) + n // 2) % n - n // 2  # signed frequency of each bin
    band = torch.nonzero(2 * f * k.abs() <= n).flatten()
    spectrum = torch.fft.fft(z, dim=dim)
    shape = [1] * z.ndim
    shape[dim] = -1
    if not downsample:
        mask = torch.zeros(n, dtype=spectrum.dtype, device=z.device)
        mask[band] = 1
        return torch.fft.ifft(spectrum * mask.reshape(shape), dim=dim)
    # sample the band-limited image at HR positions j*f + (f-1)/2: a phase ramp, then fold the
    # kept bins onto the m-point grid; m/n keeps a constant's value
    kb = k[band].double()
    phase = torch.polar(torch.full_like(kb, m / n), 2 * math.pi * kb * ((f - 1) / 2) / n)
    kept = spectrum.index_select(dim, band) * phase.to(spectrum.dtype).reshape(shape)
    out_shape = list(z.shape)
    out_shape[dim] = m
    folded = torch.zeros(out_shape, dtype=spectrum.dtype, device=z.device)
    folded.index_add_(dim, k[band] % m, kept)
    return torch.fft.ifft(folded, dim=dim)


def kspace_truncate(x: torch.Tensor, axes: int | Sequence[int], factor: int | Sequence[int],
                    downsample: bool = True, magnitude: bool = False) -> torch.Tensor:
    """Keep the central ``1/factor`` of k-space along ``axes`` (MRI low-resolution acquisition).

    The kept band is ``|k| <= n / (2 f)`` (bins of the length-``n`` FFT). With ``downsample``
    the result is that band-limited image sampled on the coarse grid, length ``n // f``, sample
    ``j`` at HR position ``j*f + (f-1)/2`` (tail voxels beyond ``(n // f) * f`` dropped first)
    and scaled by ``m/n`` so a constant keeps its value. Without it, the same band-limited image
    on the original grid (zero-filled k-space): its FFT equals the input's inside the band and
    is zero outside.

    Args:
        x: ``(C, *spatial)``; real input gives the real part, complex input stays complex.
        axes: spatial axes to truncate.
        factor: one integer, or one per axis.
        downsample: return the coarse grid (True) or the zero-filled original grid (False).
        magnitude: return ``abs()`` of the result (magnitude MRI).
    """
    axes = [axes] if isinstance(axes, numbers.Integral) else list(axes)
    fs = [factor] * len(axes) if isinstance(factor, numbers.Integral) else list(factor)
    if len(fs) != len(axes):
        raise ValueError(f"{len(fs)} factors for {len(axes)} axes")
    data = _plain(x)
    work = data.float() if data.dtype in (torch.float16, torch.bfloat16) else data
    z = work.to(torch.complex128 if work.dtype == torch.float64 else torch.complex64)
    done: dict[int, int] = {}
    for a, f in zip(axes, fs):
        dim = _dim(data, a)
        if dim - 1 in done:
            raise ValueError(f"axis {a} given twice")
        done[dim - 1] = _factor(f)
        z = _kspace_axis(z, dim, done[dim - 1], downsample)
    if magnitude:
        out = z.abs()
    elif data.is_complex():
        out = z
    else:
        out = z.real
    out = out.to(data.dtype) if not data.is_complex() else out
    return _like(out.contiguous(), x, done if downsample else None)


def partial_fourier(x: torch.Tensor, axis: int, fraction: float) -> torch.Tensor:
    """Partial-Fourier acquisition along ``axis``: only ``fraction`` (0.5..1) of k-space is
    measured — all the non-negative frequencies and the lowest negative ones — the rest is
    zero-filled, and the magnitude is returned (the blur and ringing of a zero-filled
    partial-Fourier MR image). ``fraction=1`` keeps everything (then the magnitude)."""
    if not 0.5 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0.5, 1], got {fraction!r}")
    data = _plain(x)
    dim = _dim(data, axis)
    n = data.shape[dim]
    k = (torch.arange(n, device=data.device) + n // 2) % n - n // 2
    missing = k < -(round(fraction * n) - (n + 1) // 2)  # the most negative frequencies
    spectrum = torch.fft.fft(data.to(torch.complex128 if data.dtype == torch.float64
                                     else torch.complex64), dim=dim)
    shape = [1] * data.ndim
    shape[dim] = -1
    spectrum = spectrum * (~missing).reshape(shape)
    out = torch.fft.ifft(spectrum, dim=dim).abs().to(data.dtype if not data.is_complex()
                                                      else torch.float32)
    return _like(out.contiguous(), x)


def pixel_box(x: torch.Tensor, axes: Sequence[int], factor: int) -> torch.Tensor:
    """A coarser pixel grid: the mean of each ``factor``-wide block along every axis of
    ``axes`` (a box aperture as wide as the new pixel: CT's in-plane low resolution)."""
    out = x
    for a in axes:
        out = slice_profile(out, a, factor, factor, "box")
    return out


def gaussian_psf(x: torch.Tensor, fwhm: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur with ``fwhm`` voxels per spatial axis (0: that axis untouched).

    Kernels are point-sampled Gaussians truncated at ±3 sigma and normalised (the same as
    the ``"gaussian"`` slice profile), applied with MONAI's ``separable_filtering`` and
    replicate padding. MONAI's ``GaussianFilter`` is not used: it pads with zeros (edges get
    darker) and cannot take ``sigma = 0``.
    """
    data = _plain(x)
    nsp = data.ndim - 1
    _dim(data, 0)
    fw = [float(fwhm)] * nsp if isinstance(fwhm, numbers.Real) else [float(v) for v in fwhm]
    if len(fw) != nsp or any(not v >= 0 for v in fw):
        raise ValueError(f"need {nsp} non-negative FWHM values, got {fwhm!r}")
    kernels = []
    for v in fw:
        w = np.ones(1)
        if v > 0:
            sigma = v / FWHM_PER_SIGMA
            d = np.arange(-math.floor(TRUNCATE * sigma), math.floor(TRUNCATE * sigma) + 1.0)
            w = np.exp(-0.5 * (d / sigma) ** 2)
        kernels.append(torch.as_tensor(w / w.sum(), dtype=data.dtype, device=data.device))
    from monai.networks.layers import separable_filtering

    out = separable_filtering(data[None], kernels, mode="replicate")[0]
    return _like(out, x)


def add_noise(x: torch.Tensor, sigma: float, rician: bool = False,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of std ``sigma`` (intensity units of ``x``).

    With ``rician``: ``sqrt((x + n1)^2 + n2^2)``, the magnitude of complex Gaussian noise, as in
    magnitude MRI. ``generator`` must live on ``x``'s device.
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be non-negative, got {sigma!r}")
    data = _plain(x)

    def noise() -> torch.Tensor:
        return sigma * torch.randn(data.shape, generator=generator, dtype=data.dtype,
                                   device=data.device)

    out = torch.sqrt((data + noise()) ** 2 + noise() ** 2) if rician else data + noise()
    return _like(out, x)


def simulate_thick_slices(volume: Any, axis: int, factor: int,
                          thickness: float | None = None, profile: str = "box") -> Any:
    """Thick-slice evaluation copy of a thin-slice volume ``(C, X, Y, Z)`` with its LR affine.

    The default (box, ``thickness == factor``) is slab averaging: LR slice ``k`` is the mean of
    thin slices ``k*f .. k*f+f-1`` and its centre sits at the centre of that slab.
    """
    if not _is_meta(volume) or volume.ndim != 4:
        raise TypeError("expected a MetaTensor (C, X, Y, Z) with an affine")
    return slice_profile(volume, axis, factor, thickness, profile)
