"""Every upscaling method behind one small interface.

An :class:`Upscaler` knows its output grid and turns a 3D array (or a slab of one) into one or
more *members*: predictions on the fine grid whose mean is the estimate and whose spread feeds
the uncertainty map. Interpolation has one member; a 2D network has one per plane view.
What wraps every method — 4D inputs, slab-wise memory bounds, data consistency, uncertainty,
batches — is written once, in :mod:`medsr.upscaling`, against this interface.

Example:
    >>> up = make_upscaler(array, affine, method="bspline", scale=(1, 1, 3))  # doctest: +SKIP
    >>> up.prepare(array); members = up.predict(array)                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from medsr.consistency import SliceProfile
from medsr.errors import MedsrError
from medsr.geometry import default_factors, parse_factors, target_grid
from medsr.geometry import spacing as voxel_size
from medsr.resample import INTERPOLATORS, resample_index_space

logger = logging.getLogger(__name__)

Progress = Callable[[float], None] | None


@dataclass
class Upscaler:
    """Base: an interpolation onto the grid of ``factors`` (or ``target_spacing``).

    Attributes:
        name: what ran, as printed and stored in the output's metadata.
        learned: a network made the output (data consistency and uncertainty apply).
        factors: integer factor per array axis (``None`` with ``target_spacing``).
        axis: the single upscaled axis, or ``None`` (several, or ``--spacing``).
        halo: voxels of context a slab needs on each side along a non-upscaled axis.
        profile: slice profile of the upscaled axis (consistency, self-supervised pairs).
    """

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    factors: tuple[int, int, int] | None = None
    target_spacing: tuple[float, float, float] | None = None
    profile: SliceProfile = field(default_factory=SliceProfile)
    learned: bool = False
    halo: int = 0

    def __post_init__(self) -> None:
        self.out_shape, self.out_affine, ratio = target_grid(
            self.shape, self.affine, scale=self.factors, target_spacing=self.target_spacing)
        to_source = np.linalg.solve(self.affine, self.out_affine)
        self.ratio, self.offset = np.diag(to_source)[:3], to_source[:3, 3]
        axes = [a for a in range(3) if not np.isclose(ratio[a], 1.0)]
        self.axis = axes[0] if len(axes) == 1 and self.target_spacing is None else None
        self.factor = int(round(1.0 / ratio[self.axis])) if self.axis is not None else None

    @property
    def slab_axes(self) -> list[int]:
        """Axes along which the work can be split into slabs (left at their size)."""
        if self.axis is None:
            return []
        return [a for a in range(3) if a != self.axis]

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        """Once per input (fit a model, fix the normalisation) on the whole 3D volume."""

    def predict(self, array: np.ndarray, progress: Progress = None,
                core: tuple[int, int, int] | None = None) -> list[np.ndarray]:
        """Members on the fine grid for ``array`` (the whole volume or a slab of it). With
        ``core = (axis, start, stop)`` only that range along ``axis`` must be right (the
        slab inside its halo; a method may skip work outside it)."""
        shape = list(self.out_shape)
        for a in self.slab_axes:
            shape[a] = array.shape[a]
        return [resample_index_space(array, shape, self.ratio, self.offset, self.name,
                                     progress)]


@lru_cache(maxsize=4)
def _cached_model(path: str, device: str):
    from medsr.checkpoint import load_model

    return load_model(path, device)


def load_cached(path: str | Path, device) -> tuple:
    """A model loaded once per process and device (batch workers reuse it)."""
    return _cached_model(str(Path(path).resolve()), str(device))


@dataclass
class ModelUpscaler(Upscaler):
    """A trained single-axis network (a shipped default, or ``--model``)."""

    net: object = None
    card: dict = field(default_factory=dict)
    device: object = None
    learned: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        from medsr.inference import receptive_radius

        if self.axis is None:
            raise MedsrError("a model upscales one axis at a time; asked for scale "
                             f"{list(self.factors or [])}")
        self.halo = receptive_radius(self.net)
        self.scaling = None

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        from medsr.transforms.intensity import fit_scaling

        self.scaling = fit_scaling(reference, self.card["normalization"])

    def predict(self, array: np.ndarray, progress: Progress = None,
                core: tuple[int, int, int] | None = None) -> list[np.ndarray]:
        from medsr.inference import predict_views

        return predict_views(array, self.factors, self.net, self.card, device=self.device,
                             spacing=voxel_size(self.affine), scaling=self.scaling,
                             core=core, progress=progress)


@dataclass
class SelfSupervised(ModelUpscaler):
    """A refiner fine-tuned on the scan's own in-plane slices (see :mod:`medsr.selfsup`)."""

    modality: str = "MR"
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        Upscaler.__post_init__(self)
        if self.axis is None:
            raise MedsrError("self-supervised SR upscales one (thick) axis; asked for factors "
                             f"{list(self.factors or [])}")
        self.halo, self.scaling = _initial_halo(self.modality, self.options), None

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        from medsr.checkpoint import save_model
        from medsr.inference import receptive_radius
        from medsr.selfsup import fit_self_supervised

        options = dict(self.options)
        save_to = options.pop("save_model", None)
        self.net, self.card = fit_self_supervised(
            reference, self.affine, axis=self.axis, factor=self.factor, modality=self.modality,
            profile=self.profile, device=str(self.device), progress=progress, **options)
        if save_to is not None:
            save_model(self.net, Path(save_to), self.card)
        self.halo = receptive_radius(self.net)
        super().prepare(reference)


def _initial_halo(modality: str, options: dict) -> int:
    """The reach of the network self-supervised SR will fit (its initial model's), known
    before fitting so that the memory plan counts the slabs' halo."""
    from medsr.inference import receptive_radius
    from medsr.models import default_model
    from medsr.nets import build_network
    from medsr.selfsup import FALLBACK_NETWORK

    init = options.get("init", "default")
    path = default_model(modality) if init == "default" else init
    net = load_cached(path, "cpu")[0] if path is not None else build_network(**FALLBACK_NETWORK)
    return receptive_radius(net)


def requested_factors(affine: np.ndarray, scale: Sequence[float] | None, lo: int = 1,
                      hi: int = 10**6) -> tuple[int, int, int]:
    """``scale``, or the default factors with ``[lo, hi]`` applied to the thick axes."""
    if scale is not None:
        return parse_factors(scale)
    f = [1 if f == 1 else int(np.clip(f, lo, hi)) for f in default_factors(voxel_size(affine))]
    return f[0], f[1], f[2]


def _default_choice(affine, modality, scale, spacing):
    """``(model folder, factors, None)`` for ``auto``/``default``, or ``(None, None, why)``
    when the shipped model does not apply."""
    from medsr.checkpoint import model_paths
    from medsr.inference import factor_range
    from medsr.models import default_model

    folder = default_model(modality)
    if folder is None:
        return None, None, f"no default {modality} model is shipped"
    if spacing is not None:
        return None, None, "--spacing asks for interpolation"
    lo, hi = factor_range(json.loads(model_paths(folder)[1].read_text()))
    factors = requested_factors(affine, scale, lo, hi)
    if all(f == 1 for f in factors):
        return None, None, "nothing to upscale"
    if sum(f > 1 for f in factors) > 1 or any(f != 1 and not lo <= f <= hi for f in factors):
        return None, None, (f"the default {modality} model serves factors {lo} to {hi} along "
                            f"one axis, not {list(factors)}")
    return folder, factors, None


def make_upscaler(shape: Sequence[int], affine: np.ndarray, *, method: str = "auto",
                  scale: Sequence[float] | None = None,
                  spacing: Sequence[float] | None = None, model: str | Path | None = None,
                  modality: str = "MR", device: str = "auto",
                  profile: SliceProfile | None = None,
                  self_supervised: dict | None = None) -> Upscaler:
    """The upscaler for a request (see :func:`medsr.upscale` for the arguments)."""
    shape = tuple(int(s) for s in shape)
    profile = profile or SliceProfile()
    if model is None and method in ("auto", "default"):
        model, factors, why = _default_choice(affine, modality, scale, spacing)
        if model is None:
            if method == "default":
                raise MedsrError(f"--method default: {why}")
            logger.info("using B-spline: %s", why)
            method = "bspline"
        else:
            scale = factors
    if method in INTERPOLATORS and model is None:
        factors = None if spacing is not None else requested_factors(affine, scale)
        return Upscaler(method, shape, affine, factors=factors,
                        target_spacing=tuple(spacing) if spacing is not None else None,
                        profile=profile)
    if spacing is not None:
        raise MedsrError(f"--spacing cannot be used with {'a model' if model else method}; "
                         "use --scale")
    from medsr.device import resolve_device  # torch: not for interpolation

    dev = resolve_device(device)
    if method == "self-supervised" and model is None:
        return SelfSupervised("self-supervised", shape, affine,
                              factors=requested_factors(affine, scale), profile=profile,
                              device=dev, modality=modality, options=dict(self_supervised or {}))
    from medsr.inference import factor_range

    net, card = load_cached(model, dev)
    factors = requested_factors(affine, scale, *factor_range(card))
    name = "default" if method in ("auto", "default") else f"model {model}"
    return ModelUpscaler(name, shape, affine, factors=factors, profile=profile, net=net,
                         card=card, device=dev)
