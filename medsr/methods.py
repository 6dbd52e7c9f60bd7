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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from medsr.checkpoint import model_location
from medsr.consistency import Operator, SliceProfile
from medsr.errors import MedsrError
from medsr.geometry import default_factors, parse_factors, parse_spacing, plane_pixel, target_grid
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
        final_spacing: a learned method's exact target spacing, reached by resampling its
            integer-factor grid afterwards (:mod:`medsr.upscaling`).
        noise_sd: the noise of the measured samples (scan units), measured on the scan when
            a learned method runs (:mod:`medsr.noise`); the consistency projection fits
            within it, and self-supervised pairs and the self-check carry it. 0: none.
        consistency_gain: the share of the re-degradation residual the projection corrects
            (1: exact), fixed per run from the self-check (:func:`medsr.noise.
            projection_gain`); ``None``: measured on each array projected.
    """

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    factors: tuple[int, int, int] | None = None
    target_spacing: tuple[float, float, float] | None = None
    profile: SliceProfile = field(default_factory=SliceProfile)
    learned: bool = False
    halo: int = 0
    final_spacing: tuple[float, float, float] | None = None
    noise_sd: float | None = None
    consistency_gain: float | None = None

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

    def operators(self) -> list[Operator]:
        """The acquisition operator of every upscaled axis (data consistency, uncertainty);
        empty for interpolation."""
        if not self.learned or self.axis is None:
            return []
        return [(self.axis, self.factor, self.profile)]

    def through_plane(self) -> Upscaler | None:
        """The part that upscales one thick axis (whose slice profile the request sets)."""
        return self if self.learned and self.axis is not None else None

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
    return _cached_model(str(model_location(path).resolve()), str(device))


@lru_cache(maxsize=8)
def _cached_card(path: str) -> dict:
    from medsr.checkpoint import read_card

    return read_card(path)[1]


def model_card(path: str | Path) -> dict:
    """A model's card (no network built, no torch), read once per process."""
    return _cached_card(str(model_location(path).resolve()))


@lru_cache(maxsize=8)
def _cached_graphs(path: str, factor: int, cache: str):
    from medsr.checkpoint import read_card
    from medsr.runtime import cached_network

    weights, card = read_card(path)
    return cached_network(weights, card, factor)


def load_network(path: str | Path, device, factor: int) -> tuple[object, object]:
    """``(network, device)`` to run a model ×``factor``: its cached graph
    (:class:`medsr.runtime.GraphNet`, no torch) when the device is surely the CPU and the
    graph is on disk, else the PyTorch network (:func:`load_cached`; on the CPU its first run
    exports the graph for the next)."""
    from medsr.device import surely_cpu

    if surely_cpu(device):
        from medsr.runtime import cache_dir

        net = _cached_graphs(str(model_location(path).resolve()), int(factor), str(cache_dir()))
        if net is not None:
            return net, "cpu"
    from medsr.device import resolve_device

    dev = resolve_device(device)
    return load_cached(path, dev)[0], dev


@dataclass
class NetworkUpscaler(Upscaler):
    """Base of the methods that run a trained network: its weights, card and device, and
    the intensity scaling its card asks for, fitted once per input."""

    net: object = None
    card: dict = field(default_factory=dict)
    device: object = None
    learned: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scaling = None

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        from medsr.transforms.intensity import fit_scaling

        self.scaling = fit_scaling(reference, self.card["normalization"])


@dataclass
class ModelUpscaler(NetworkUpscaler):
    """A trained single-axis network (a shipped default, or ``--model``).

    With ``skip_background`` a 2D network computes only the rows of its planes near the body,
    and the background takes B-spline's values (:mod:`medsr.background`; the body's output
    is unchanged, bit for bit). Off by default: it saved 4-6 % of the networks' CPU time on
    a head CT and nothing measurable on the other held-out scans (``docs/speed.md``)."""

    skip_background: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        from medsr.inference import receptive_radius

        if self.axis is None:
            raise MedsrError("a model upscales one axis at a time; asked for scale "
                             f"{list(self.factors or [])}")
        self.halo = receptive_radius(self.net)
        self.background = None

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        super().prepare(reference)
        self.background = None
        if self.skip_background:
            from medsr.background import plan

            self.background = plan(reference, self.axis, self.net, self.card, self.noise_sd)

    def predict(self, array: np.ndarray, progress: Progress = None,
                core: tuple[int, int, int] | None = None) -> list[np.ndarray]:
        from medsr.inference import predict_views

        rows = None
        if self.background is not None:
            from medsr.background import body_rows

            rows = body_rows(array, self.axis, self.background)
        return predict_views(array, self.factors, self.net, self.card, device=self.device,
                             spacing=voxel_size(self.affine), scaling=self.scaling,
                             planes=self.card.get("views", "both"), core=core, rows=rows,
                             progress=progress)


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
        self.halo, self.scaling = _initial_halo(self.modality, self.options,
                                                plane_pixel(self.affine, self.axis)), None
        self.background = None

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        from medsr.checkpoint import save_model
        from medsr.inference import receptive_radius
        from medsr.selfsup import fit_self_supervised

        options = dict(self.options)
        save_to = options.pop("save_model", None)
        self.net, self.card = fit_self_supervised(
            reference, self.affine, axis=self.axis, factor=self.factor, modality=self.modality,
            profile=self.profile, device=str(self.device), progress=progress,
            noise_sd=self.noise_sd or 0.0, **options)
        if save_to is not None:
            save_model(self.net, Path(save_to), self.card)
        self.halo = receptive_radius(self.net)
        super().prepare(reference)


@dataclass
class PlaneUpscaler(NetworkUpscaler):
    """An in-plane network (:func:`medsr.inference.plane_axes` 2): both axes of the plane ×f,
    plane by plane; its operator per axis comes from how the model was trained (k-space
    truncation, ``sinc``, for MR; a pixel box for CT)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        up = [a for a in range(3) if (self.factors or (1, 1, 1))[a] > 1]
        if len(up) != 2 or self.factors[up[0]] != self.factors[up[1]]:
            raise MedsrError("an in-plane model upscales two axes by one factor; asked for "
                             f"scale {list(self.factors or [])}")
        self.plane, self.factor = (up[0], up[1]), int(self.factors[up[0]])
        self.profile = inplane_profile(self.card)

    @property
    def slab_axes(self) -> list[int]:
        return [3 - sum(self.plane)]

    def operators(self) -> list[Operator]:
        return [(a, self.factor, self.profile) for a in self.plane]

    def through_plane(self) -> Upscaler | None:
        return None

    def predict(self, array: np.ndarray, progress: Progress = None,
                core: tuple[int, int, int] | None = None) -> list[np.ndarray]:
        from medsr.inference import upscale_plane

        return upscale_plane(array, self.plane, self.factor, self.net, self.card,
                             device=self.device, scaling=self.scaling, progress=progress)


def inplane_profile(card: dict) -> SliceProfile:
    """The in-plane operator a model was trained for: ``sinc`` (k-space) or a box."""
    profiles = card.get("degradation", {}).get("profiles", ["box"])
    return SliceProfile("sinc") if "kspace" in profiles else SliceProfile("box", 1.0)


@dataclass
class ChainUpscaler(Upscaler):
    """Learned upscalers one after another on disjoint axes: the in-plane network, then the
    through-plane one (default model or self-supervised) on its output. Each stage is built
    for the grid the one before produces; the operators of all axes make one consistency
    projection onto the measured volume."""

    stages: list = field(default_factory=list)
    learned: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._first: tuple | None = None  # (key, first stages' output) for the reference

    @property
    def slab_axes(self) -> list[int]:
        return []

    def operators(self) -> list[Operator]:
        return [op for stage in self.stages for op in stage.operators()]

    def through_plane(self) -> Upscaler | None:
        return self.stages[-1].through_plane()

    def _early(self, array: np.ndarray) -> np.ndarray:
        """The first stages' output for ``array``: the one ``prepare`` made for the whole
        volume (used once, then dropped), else computed (checks and calibration)."""
        if self._first is not None and self._first[0] == _key(array):
            x, self._first = self._first[1], None
            return x
        x = array
        for stage in self.stages[:-1]:
            x = mean_members(stage.predict(x))
        return x

    def prepare(self, reference: np.ndarray, progress: Progress = None) -> None:
        x = reference
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            stage.prepare(x, progress=progress if last else None)
            if not last:
                x = mean_members(stage.predict(x))
        self._first = (_key(reference), x)

    def predict(self, array: np.ndarray, progress: Progress = None,
                core: tuple[int, int, int] | None = None) -> list[np.ndarray]:
        return self.stages[-1].predict(self._early(array), progress=progress)


def _key(array: np.ndarray) -> tuple:
    """What identifies an array's memory: the same frame seen again is the same key."""
    return array.__array_interface__["data"][0], array.shape, array.strides


def mean_members(members: list[np.ndarray]) -> np.ndarray:
    """The members' mean, in place in the first (no copy of a slab more than needed)."""
    out = members[0]
    for m in members[1:]:
        out += m
    if len(members) > 1:
        out /= np.float32(len(members))
    return out


def _initial_halo(modality: str, options: dict, pixel_mm: float) -> int:
    """The reach of the network self-supervised SR will fit (its initial model's,
    :func:`medsr.selfsup.initial_model` for the planes' ``pixel_mm``), known before fitting so
    that the memory plan counts the slabs' halo."""
    from medsr.inference import receptive_radius
    from medsr.nets import build_network
    from medsr.selfsup import FALLBACK_NETWORK, initial_model

    path = initial_model(options.get("init", "default"), modality, pixel_mm)
    net = load_cached(path, "cpu")[0] if path is not None else build_network(**FALLBACK_NETWORK)
    return receptive_radius(net)


def requested_factors(affine: np.ndarray, scale: Sequence[float] | None, lo: int = 1,
                      hi: int = 10**6) -> tuple[int, int, int]:
    """``scale``, or the default factors with ``[lo, hi]`` applied to the thick axes."""
    if scale is not None:
        return parse_factors(scale)
    f = [1 if f == 1 else int(np.clip(f, lo, hi)) for f in default_factors(voxel_size(affine))]
    return f[0], f[1], f[2]


def spacing_factors(affine: np.ndarray, spacing: Sequence[float]) -> tuple[int, int, int]:
    """The integer factors a learned method runs for a target ``spacing``: the smallest at or
    above each axis's ratio (an exact resample then reaches the spacing)."""
    f = np.maximum(1, np.ceil(voxel_size(affine) / parse_spacing(spacing) - 1e-3)).astype(int)
    return int(f[0]), int(f[1]), int(f[2])


def one_slice_request(shape: Sequence[int], affine: np.ndarray,
                      scale: Sequence[float] | None, spacing: Sequence[float] | None
                      ) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """``(scale, spacing)`` for a single slice (one voxel along an axis): in-plane only.

    With neither given, the slice's own plane is brought to its finest pixel (the slice
    thickness is not a spacing to undo). Volumes pass unchanged.

    Raises:
        MedsrError: a factor or a spacing change along the slice's one-voxel axis.
    """
    flat = [a for a in range(3) if int(shape[a]) == 1]
    if not flat:
        return scale, spacing
    if len(flat) > 1:
        raise MedsrError(f"a single voxel along two axes {tuple(shape)}: a line, not a slice "
                         "or a volume")
    axis = flat[0]
    example = " ".join("1" if a == axis else "2" for a in range(3))
    if scale is None and spacing is None:  # the default factors of the plane alone
        d = voxel_size(affine).copy()
        d[axis] = np.delete(d, axis).min()
        f = list(default_factors(d))
        f[axis] = 1
        return tuple(f), None
    if scale is not None and parse_factors(scale)[axis] != 1:
        raise MedsrError(f"a single slice (one voxel along axis {axis}) is upscaled in its "
                         f"plane only: give a factor of 1 along that axis, e.g. --scale {example}")
    if spacing is not None:
        have = float(voxel_size(affine)[axis])
        if abs(float(parse_spacing(spacing)[axis]) - have) > 1e-3 * have:
            raise MedsrError(f"a single slice (one voxel along axis {axis}) keeps its "
                             f"{have:g} mm along that axis: give --spacing with {have:g} there")
    return scale, spacing


def split_factors(affine: np.ndarray, factors: Sequence[int]
                  ) -> tuple[tuple[int, int] | None, int | None, str | None]:
    """``(plane, thick axis, why)``: the two axes an in-plane network serves (equal factors)
    and the one thick axis a through-plane network serves; ``why`` when neither fits."""
    up = [a for a in range(3) if factors[a] > 1]
    if not up:
        return None, None, ("nothing to upscale (no axis is a whole factor coarser than the "
                            "finest; give --scale or --spacing)")
    if len(up) == 1:
        return None, up[0], None
    d = voxel_size(affine)
    pairs = [(a, b) for a, b in ((0, 1), (0, 2), (1, 2))
             if a in up and b in up and factors[a] == factors[b]]
    if not pairs:
        return None, None, (f"unequal factors {list(factors)} on two axes: learned methods "
                            "upscale one thick axis, two in-plane axes by one factor, or both")
    plane = min(pairs, key=lambda p: (d[p[0]] + d[p[1]], 3 - p[0] - p[1] != 2))
    rest = [a for a in up if a not in plane]
    return plane, (rest[0] if rest else None), None


def _in_range(card: dict, f: int) -> bool:
    from medsr.inference import factor_range

    lo, hi = factor_range(card)
    return lo <= f <= hi


def _default_stages(shape, affine, factors, scale, modality, device, profile, selfsup
                    ) -> tuple[Upscaler | None, str | None]:
    """The learned upscaler for ``factors``: the shipped in-plane model on the plane, the
    shipped through-plane model (or self-supervised SR, ``selfsup`` options) on the thick
    axis, chained when both apply; or ``(None, why)``, without loading torch when the
    request's factors alone rule the models out and no device was named."""
    plane, thick, why = split_factors(affine, factors)
    if why and str(device) in ("auto", "cpu"):  # no model to run, no device to check: no torch
        return None, why
    from medsr.device import resolve_device
    from medsr.inference import factor_range
    from medsr.models import default_model

    if why:  # an explicit device is checked even when no model serves
        resolve_device(device)
        return None, why
    stages: list[Upscaler] = []
    grid_shape, grid_affine = tuple(shape), affine
    if plane is not None:
        folder = default_model(modality, "inplane")
        if folder is None:
            return None, f"no default in-plane {modality} model is shipped"
        dev = resolve_device(device)
        net, card = load_cached(folder, dev)
        f = factors[plane[0]]
        if not _in_range(card, f):
            lo, hi = factor_range(card)
            return None, (f"the default in-plane {modality} model serves factors {lo} to {hi} "
                          f"on both in-plane axes, not {list(factors)}")
        plane_factors = tuple(f if a in plane else 1 for a in range(3))
        stages.append(PlaneUpscaler("default in-plane", grid_shape, grid_affine,
                                    factors=plane_factors, net=net, card=card, device=dev))
        grid_shape, grid_affine = stages[-1].out_shape, stages[-1].out_affine
    if thick is not None:
        thick_factors = tuple(factors[a] if a == thick else 1 for a in range(3))
        if selfsup is not None:
            stages.append(SelfSupervised("self-supervised", grid_shape, grid_affine,
                                         factors=thick_factors, profile=profile,
                                         device=resolve_device(device), modality=modality,
                                         options=dict(selfsup)))
        else:
            folder = default_model(modality, pixel_mm=plane_pixel(grid_affine, thick))
            if folder is None:
                return None, f"no default {modality} model is shipped"
            card = model_card(folder)
            lo, hi = factor_range(card)
            if scale is None:  # the automatic target: clip to what the model serves
                thick_factors = requested_factors(grid_affine, None, lo, hi) \
                    if plane is None else thick_factors
            if not _in_range(card, thick_factors[thick]):
                return None, (f"the default {modality} model serves factors {lo} to {hi} "
                              f"along one axis, not {list(factors)}")
            net, dev = load_network(folder, device, thick_factors[thick])
            stages.append(ModelUpscaler("default", grid_shape, grid_affine,
                                        factors=thick_factors, profile=profile, net=net,
                                        card=card, device=dev))
    elif selfsup is not None:
        return None, ("self-supervised SR learns a thick axis from the scan's finer planes; "
                      f"scale {list(factors)} has no thick axis (use --method default)")
    if len(stages) == 1:
        return stages[0], None
    return ChainUpscaler(" + ".join(st.name for st in stages), tuple(shape), affine,
                         factors=tuple(int(f) for f in factors), stages=stages), None


def make_upscaler(shape: Sequence[int], affine: np.ndarray, *, method: str = "auto",
                  scale: Sequence[float] | None = None,
                  spacing: Sequence[float] | None = None, model: str | Path | None = None,
                  modality: str = "MR", device: str = "auto",
                  profile: SliceProfile | None = None,
                  self_supervised: dict | None = None) -> Upscaler:
    """The upscaler for a request (see :func:`medsr.upscale` for the arguments).

    Learned methods run on integer factors: with ``spacing`` the smallest at or above each
    axis's ratio, after which the caller resamples exactly onto the spacing
    (``final_spacing``). Two equal factors on the finest axes go to the in-plane model, a
    single thick axis to the through-plane one (or self-supervised SR), and both chained.
    """
    shape = tuple(int(s) for s in shape)
    profile = profile or SliceProfile()
    scale, spacing = one_slice_request(shape, affine, scale, spacing)

    def interpolation(name: str) -> Upscaler:
        factors = None if spacing is not None else requested_factors(affine, scale)
        return Upscaler(name, shape, affine, factors=factors,
                        target_spacing=tuple(spacing) if spacing is not None else None,
                        profile=profile)

    if method in INTERPOLATORS and model is None:
        return interpolation(method)
    if scale is not None and spacing is not None:
        raise MedsrError("give either --scale or --spacing, not both")
    factors = (spacing_factors(affine, spacing) if spacing is not None
               else requested_factors(affine, scale))
    if model is None:
        selfsup = dict(self_supervised or {}) if method == "self-supervised" else None
        up, why = _default_stages(shape, affine, factors, scale if spacing is None else factors,
                                  modality, device, profile, selfsup)
        if up is None:
            if method != "auto":
                raise MedsrError(f"--method {method}: {why}")
            if spacing is not None and max(factors) == 1:  # resampling: B-spline's job
                logger.info("method auto: no axis gets finer, so B-spline resamples to the "
                            "spacing")
            else:
                logger.warning("method auto: %s, so using B-spline", why)
            return interpolation("bspline")
    else:
        from medsr.device import resolve_device
        from medsr.inference import factor_range, plane_axes

        card = model_card(model)
        name = f"model {model}"
        if plane_axes(card) == 2:
            dev = resolve_device(device)
            up = PlaneUpscaler(name, shape, affine, factors=factors,
                               net=load_cached(model, dev)[0], card=card, device=dev)
        else:
            if spacing is None:
                factors = requested_factors(affine, scale, *factor_range(card))
            thick = [f for f in factors if f > 1]
            if len(thick) == 1:
                net, dev = load_network(model, device, thick[0])
            else:  # more than one axis: refused below
                dev = resolve_device(device)
                net = load_cached(model, dev)[0]
            up = ModelUpscaler(name, shape, affine, factors=factors, profile=profile,
                               net=net, card=card, device=dev)
    if spacing is not None:
        up.final_spacing = tuple(float(t) for t in spacing)
    return up
