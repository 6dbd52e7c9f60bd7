"""Random keyed degradation transforms (MONAI ``MapTransform``): training pairs drawn from
:mod:`medsr.transforms.degrade`'s deterministic functions.

They live apart from those functions because defining them needs MONAI's base classes, and
``import monai`` loads every MONAI subpackage (seconds); the functions are used by inference
(consistency, self-check), which then loads no MONAI.

Random keyed transforms draw every number from ``self.R`` (seed with ``set_random_state``).
Recommended order: blur / k-space on the HR image -> :class:`RandSliceProfiled` -> noise on
the LR image, e.g. ``Compose([RandGaussianPSFd("image", ...), RandSliceProfiled("image"),
RandNoised("lr", ...)])``.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

from medsr.transforms.degrade import (
    PROFILES,
    _dim,
    _factor,
    add_noise,
    gaussian_psf,
    kspace_truncate,
    partial_fourier,
    pixel_box,
    slice_profile,
)


def _range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (value, value) if isinstance(value, numbers.Real) else tuple(value)
    if not lo <= hi:
        raise ValueError(f"{name} range must be (low, high) with low <= high, got {value!r}")
    return float(lo), float(hi)


def _choices(value: Any) -> list[Any]:
    return [value] if isinstance(value, (numbers.Integral, str)) else list(value)


class RandSliceProfiled(Randomizable, MapTransform):
    """Draw a slice profile, write the LR image to ``lr_key`` and record the draw.

    ``data[record_key]`` gets ``{"axis", "factor", "thickness", "profile"}`` (thickness in HR
    voxels). A MetaTensor input gives an LR MetaTensor with the convention's affine.

    Args:
        keys: HR image key(s); every key gets the same draw.
        lr_key: output key(s), one per key.
        axis: a spatial axis or a sequence of candidate axes.
        factor: an integer or an inclusive range ``(low, high)``.
        thickness: thickness / factor, a value or a range ``(low, high)``.
        profile: ``"box"``, ``"gaussian"`` or a sequence of candidates.
    """

    def __init__(self, keys: KeysCollection, lr_key: str | Sequence[str] = "lr",
                 axis: int | Sequence[int] = -1, factor: int | Sequence[int] = (2, 6),
                 thickness: float | Sequence[float] = (0.8, 1.2),
                 profile: str | Sequence[str] = "box", record_key: str = "degradation",
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.lr_keys = [lr_key] if isinstance(lr_key, str) else list(lr_key)
        if len(self.lr_keys) != len(self.keys):
            raise ValueError("give one lr_key per key")
        self.axes = _choices(axis)
        lo, hi = _range(factor, "factor")
        self.factor = (_factor(lo), _factor(hi))
        self.ratio = _range(thickness, "thickness")
        self.profiles = _choices(profile)
        for p in self.profiles:
            if p not in PROFILES:
                raise ValueError(f"profile must be one of {PROFILES}, got {p!r}")
        self.record_key = record_key
        self.params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        f = int(self.R.randint(self.factor[0], self.factor[1] + 1))
        self.params = {"axis": int(self.axes[self.R.randint(len(self.axes))]), "factor": f,
                       "thickness": float(self.R.uniform(*self.ratio)) * f,
                       "profile": str(self.profiles[self.R.randint(len(self.profiles))])}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        p = dict(self.params)
        for key, lr_key in zip(self.keys, self.lr_keys):
            if key not in d and self.allow_missing_keys:
                continue
            p["axis"] = _dim(d[key], p["axis"]) - 1
            d[lr_key] = slice_profile(d[key], p["axis"], p["factor"], p["thickness"],
                                      p["profile"])
        d[self.record_key] = {**d.get(self.record_key, {}), **p}
        return d


class _RandKeyed(RandomizableTransform, MapTransform):
    """Replace each key's value, with probability ``prob``, by ``self.apply(x, self.draw())``."""

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        value = self.draw()
        for key in self.key_iterator(d):
            d[key] = self.apply(d[key], value)
        return d


class RandKSpaced(_RandKeyed):
    """:func:`kspace_truncate` along ``axes`` by one integer factor drawn from ``factor``."""

    def __init__(self, keys: KeysCollection, axes: int | Sequence[int] = (0, 1),
                 factor: int | Sequence[int] = (2, 4), downsample: bool = False,
                 magnitude: bool = False, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        lo, hi = _range(factor, "factor")
        self.axes, self.factor = axes, (_factor(lo), _factor(hi))
        self.downsample, self.magnitude = downsample, magnitude

    def draw(self) -> int:
        return int(self.R.randint(self.factor[0], self.factor[1] + 1))

    def apply(self, x: torch.Tensor, value: int) -> torch.Tensor:
        return kspace_truncate(x, self.axes, value, self.downsample, self.magnitude)


class RandGaussianPSFd(_RandKeyed):
    """:func:`gaussian_psf` with one FWHM (voxels) drawn from ``fwhm`` on ``axes``, 0 elsewhere."""

    def __init__(self, keys: KeysCollection, fwhm: float | Sequence[float] = (0.5, 1.5),
                 axes: int | Sequence[int] = (0, 1), prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.fwhm, self.axes = _range(fwhm, "fwhm"), _choices(axes)

    def draw(self) -> float:
        return float(self.R.uniform(*self.fwhm))

    def apply(self, x: torch.Tensor, value: float) -> torch.Tensor:
        fw = [0.0] * (x.ndim - 1)
        for a in self.axes:
            fw[_dim(x, a) - 1] = value
        return gaussian_psf(x, fw)


class RandNoised(_RandKeyed):
    """:func:`add_noise` with one ``sigma`` drawn from a range; each key gets its own noise."""

    def __init__(self, keys: KeysCollection, sigma: float | Sequence[float] = (0.0, 0.05),
                 rician: bool = False, prob: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.sigma, self.rician = _range(sigma, "sigma"), rician

    def draw(self) -> float:
        return float(self.R.uniform(*self.sigma))

    def apply(self, x: torch.Tensor, value: float) -> torch.Tensor:
        gen = torch.Generator(device=x.device).manual_seed(int(self.R.randint(2**31 - 1)))
        return add_noise(x, value, self.rician, gen)


class RandInPlaned(Randomizable, MapTransform):
    """In-plane low resolution for training or evaluation pairs: each key's image degraded
    ×``factor`` along both ``axes`` by MRI's k-space truncation (``"kspace"``, with optional
    partial Fourier along the first axis) or a pixel box (``"box"``), written to ``lr_key``
    on the LR grid (a MetaTensor gets the convention's affine); the draw is recorded.

    Args:
        keys: HR image key(s); every key gets the same draw.
        lr_key: output key(s), one per key.
        axes: the two spatial axes of the plane.
        factor: an integer or an inclusive range ``(low, high)``.
        profile: ``"kspace"``, ``"box"`` or a sequence of candidates.
        partial_fourier: the measured fraction of k-space (a value or a range in 0.5..1),
            for ``"kspace"``; 1 (default) is a full acquisition.

    Example:
        >>> t = RandInPlaned("image", factor=2, profile="kspace")
        >>> t.set_random_state(0)(dict(image=torch.rand(1, 64, 64, 8)))["lr"].shape
        torch.Size([1, 32, 32, 8])
    """

    def __init__(self, keys: KeysCollection, lr_key: str | Sequence[str] = "lr",
                 axes: Sequence[int] = (0, 1), factor: int | Sequence[int] = (2, 4),
                 profile: str | Sequence[str] = "kspace",
                 partial_fourier: float | Sequence[float] = 1.0,
                 record_key: str = "degradation", allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.lr_keys = [lr_key] if isinstance(lr_key, str) else list(lr_key)
        if len(self.lr_keys) != len(self.keys):
            raise ValueError("give one lr_key per key")
        self.axes = tuple(int(a) for a in axes)
        if len(self.axes) != 2 or self.axes[0] == self.axes[1]:
            raise ValueError(f"axes must be two different spatial axes, got {axes!r}")
        lo, hi = _range(factor, "factor")
        self.factor = (_factor(lo), _factor(hi))
        self.profiles = _choices(profile)
        for p in self.profiles:
            if p not in ("kspace", "box"):
                raise ValueError(f"profile must be kspace or box, got {p!r}")
        self.fraction = _range(partial_fourier, "partial_fourier")
        self.record_key = record_key
        self.params: dict[str, Any] = {}

    def randomize(self, data: Any = None) -> None:
        self.params = {"axes": list(self.axes),
                       "factor": int(self.R.randint(self.factor[0], self.factor[1] + 1)),
                       "profile": str(self.profiles[self.R.randint(len(self.profiles))]),
                       "partial_fourier": float(self.R.uniform(*self.fraction))}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        p = self.params
        for key, lr_key in zip(self.keys, self.lr_keys):
            if key not in d and self.allow_missing_keys:
                continue
            x = d[key]
            if p["profile"] == "box":
                d[lr_key] = pixel_box(x, self.axes, p["factor"])
                continue
            if p["partial_fourier"] < 1.0:
                x = partial_fourier(x, self.axes[0], p["partial_fourier"])
            d[lr_key] = kspace_truncate(x, self.axes, p["factor"])
        d[self.record_key] = {**d.get(self.record_key, {}), **p}
        return d
