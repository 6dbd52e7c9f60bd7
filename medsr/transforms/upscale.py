"""Reading and upscaling as MONAI transforms, for use inside ``Compose``.

They wrap :func:`medsr.io.load_volume` and :func:`medsr.upscaling.upscale_volume`; the package's
``__init__`` exports them lazily, so the low-level transforms never import the upscaling
layer (imports flow down).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medsr.io import load_volume
from medsr.upscaling import upscale_volume


class LoadVolume(Transform):
    """``path -> MetaTensor (1, X, Y, Z)`` with :func:`medsr.load_volume`."""

    def __init__(self, series_uid: str | None = None) -> None:
        self.series_uid = series_uid

    def __call__(self, path: str | Path) -> MetaTensor:
        return load_volume(path, series_uid=self.series_uid)


class Upscale(Transform):
    """Upscale a MetaTensor onto a finer grid covering the same extent (see ``medsr.upscale``).

    Example:
        >>> from monai.transforms import Compose, ScaleIntensity
        >>> pipeline = Compose([LoadVolume(), Upscale(scale=(1, 1, 3)), ScaleIntensity()])
    """

    def __init__(self, scale: Sequence[int] | None = None, *,
                 spacing: Sequence[float] | None = None, method: str = "bspline") -> None:
        self.scale, self.spacing, self.method = scale, spacing, method

    def __call__(self, volume: MetaTensor) -> MetaTensor:
        return upscale_volume(volume, self.scale, spacing=self.spacing, method=self.method)


class LoadVolumed(MapTransform):
    """Keyed :class:`LoadVolume`."""

    def __init__(self, keys: KeysCollection, series_uid: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(series_uid)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class Upscaled(MapTransform):
    """Keyed :class:`Upscale`."""

    def __init__(self, keys: KeysCollection, scale: Sequence[int] | None = None, *,
                 spacing: Sequence[float] | None = None, method: str = "bspline",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.upscaler = Upscale(scale, spacing=spacing, method=method)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.upscaler(d[key])
        return d
