"""Experiment configuration: YAML (``safe_load``) into typed dataclasses, with validation.

One YAML file is one experiment. Unknown keys are errors, so typos never pass silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsr.errors import MedsrError


@dataclass
class DataConfig:
    """Where the training volumes are and how they are split and normalised."""

    train: list[str] = field(default_factory=list)  # files or folders (NIfTI/NRRD/DICOM)
    val: list[str] = field(default_factory=list)  # held out; empty: take val_fraction of train
    val_fraction: float = 0.2
    modality: str = "MR"  # "MR" or "CT": chooses the intensity normalisation
    normalization: dict[str, Any] | None = None  # default from the modality
    hr_spacing_tolerance: float = 1.5  # planes whose spacings are <= tol × the finest are HR


@dataclass
class PatchConfig:
    """Patch sampling: 2D patches from high-resolution planes, or 3D patches."""

    size: list[int] = field(default_factory=lambda: [48, 48])  # HR patch; the LR axis is last
    batch_size: int = 16
    val_patches: int = 64
    min_foreground: float = 0.1  # reject patches with less foreground than this fraction
    foreground_threshold: float = 0.02  # normalised intensity above which a voxel counts
    # scale augmentation: a share (``zoom_probability``) of patches is cut ``s`` times larger,
    # ``s`` drawn from ``zoom`` [lo, hi], and shrunk to ``size`` with an anti-aliased filter,
    # so the network also learns anatomy seen on coarser grids (a 2 mm EPI, a 1.5 mm T2)
    zoom: list[float] = field(default_factory=lambda: [1.0, 1.0])
    zoom_probability: float = 0.0
    # share of the zoomed 2D patches shrunk by cropping k-space (a sinc point-spread function
    # with its ringing, as an MR scanner's coarser grid measures) instead of the anti-aliased
    # bicubic filter
    zoom_kspace_probability: float = 0.0
    # contrast augmentation: a share of patches has its intensities remapped by a random
    # piecewise-linear curve (background kept dark), so an MR model trained on T1 meets other
    # contrasts (T2*, EPI, FLAIR) with their tissue order changed
    contrast_probability: float = 0.0
    # anisotropic-resolution augmentation: a share of patches is blurred along the axes that
    # are not degraded (a Gaussian of ``fine_blur`` [lo, hi] FWHM voxels), input and target
    # alike, so the network does not take the fine axis's sharpness as the measure of the
    # degraded one's (an EPI's phase axis is blurrier than its readout axis)
    fine_blur: list[float] = field(default_factory=lambda: [0.0, 0.0])
    fine_blur_probability: float = 0.0


@dataclass
class DegradationConfig:
    """How the low-resolution input is simulated (see ``medsr.transforms.degrade``)."""

    # slice spacing in HR voxels along the LR axis: an int (the network's scale), or an
    # inclusive range [lo, hi] drawn per batch for networks that take the interpolated input
    factor: int | list[int] = 4
    thickness: list[float] = field(default_factory=lambda: [0.8, 1.2])  # × factor
    profiles: list[str] = field(default_factory=lambda: ["box", "gaussian"])
    noise: list[float] = field(default_factory=lambda: [0.0, 0.01])  # std, normalised units
    rician: bool = False
    # share of patches that get noise (the rest stay clean, so a blind denoiser keeps clean
    # scans as they are); drawn only when below 1, so older configs draw what they drew
    noise_probability: float = 1.0
    blur_fwhm: list[float] = field(default_factory=lambda: [0.0, 0.0])  # in-plane PSF, voxels
    kspace: float = 0.0  # probability of in-plane k-space truncation ×2 before profiling
    # 1: only the last axis of a patch is degraded (thick slices); 2: both axes of a 2D patch
    # (in-plane SR), each by the factor with one of ``profiles``: "box" (pixel/detector
    # aperture), "gaussian", or "kspace" (central 1/f of k-space: MRI's sinc profile)
    axes: int = 1


@dataclass
class NetworkConfig:
    """A registry name (or ``package.module:Class``) and its hyperparameters."""

    name: str = "edsr"
    spatial_dims: int = 2
    params: dict[str, Any] = field(default_factory=dict)
    # "lr": the network upsamples the LR input by the factor (sub-pixel, fixed factor);
    # "interpolated": the LR input is first interpolated onto the HR grid (``interpolation``:
    # linear or bspline) and the network (scale 1) corrects it, so one network serves a range
    # of factors (as VDSR)
    input: str = "lr"
    interpolation: str = "linear"
    init: str | None = None  # a model folder to start from (fine-tuning); same architecture
    # False: start from the tensors of ``init`` whose names and shapes match (transfer, e.g.
    # the body of a through-plane model into an in-plane one); the rest keep their init
    init_strict: bool = True
    # True: ``init`` is a wider ``lrrefiner``; start from its copy narrowed to this network's
    # ``features`` (:mod:`medsr.nets.narrow`)
    init_narrow: bool = False


@dataclass
class OptimConfig:
    """Optimiser, schedule, checkpoints and stopping."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 2000
    warmup_steps: int = 50
    val_every: int = 100
    # decay of an exponential moving average of the weights per step (0: off; e.g. 0.999
    # averages about the last 1,000 steps). With it, validation, the saved weights and
    # ``ship_model.py --last`` use the average, which moves less from one step to the next
    ema: float = 0.0
    checkpoint_every: int = 100
    patience: int = 0  # validations without improvement before stopping; 0 = never
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    # with amp, bf16 autocast on a CPU that computes it natively (AMX / AVX-512 BF16): 1.9x
    # the patches per second, the same validation PSNR; float32 on other CPUs (docs/training.md)
    cpu_bf16: bool = True
    loss: str = "l1"


@dataclass
class DistillConfig:
    """Knowledge distillation: a second target, a trained teacher's output on each input."""

    # a model folder (a trained network serving the same factors and axes); None: no teacher
    teacher: str | None = None
    # share of the loss that matches the teacher's output; the rest matches the truth
    weight: float = 0.5


@dataclass
class TrainConfig:
    """One experiment."""

    name: str = "medsr"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise MedsrError(f"config section {where or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MedsrError(f"unknown config key(s) {', '.join(unknown)} in {where or 'top level'};"
                         f" allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        sub = fields[name].type
        nested = {"DataConfig": DataConfig, "PatchConfig": PatchConfig,
                  "DegradationConfig": DegradationConfig, "NetworkConfig": NetworkConfig,
                  "OptimConfig": OptimConfig, "DistillConfig": DistillConfig,
                  }.get(sub if isinstance(sub, str) else sub.__name__)
        kwargs[name] = _build(nested, value, f"{where}.{name}".strip(".")) if nested else value
    return cls(**kwargs)


def factor_range(d: DegradationConfig) -> tuple[int, int]:
    """``(lo, hi)`` of the degradation factor (equal for a fixed factor)."""
    f = d.factor
    values = [f, f] if isinstance(f, int) else list(f)
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise MedsrError("degradation.factor must be an integer or a list [lo, hi] of integers")
    return values[0], values[1]


def _takes_factor(name: str) -> bool:
    """Whether the registry network ``name`` takes the factor per call (one head per factor)."""
    from medsr.nets import NETWORKS

    return bool(getattr(NETWORKS.get(name), "takes_factor", False))


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values a typo or a bad override could break; raise one-line MedsrErrors."""
    d, p, n, o = cfg.degradation, cfg.patch, cfg.network, cfg.optim
    if n.spatial_dims not in (2, 3):
        raise MedsrError("network.spatial_dims must be 2 or 3")
    if len(p.size) != n.spatial_dims:
        raise MedsrError(f"patch.size needs {n.spatial_dims} numbers for a {n.spatial_dims}D net")
    if n.input not in ("lr", "interpolated"):
        raise MedsrError("network.input must be lr or interpolated")
    if n.interpolation not in ("linear", "bspline"):
        raise MedsrError("network.interpolation must be linear or bspline")
    if d.axes not in (1, 2) or (d.axes == 2 and n.spatial_dims != 2):
        raise MedsrError("degradation.axes must be 1, or 2 (both axes of a 2D network's patch)")
    known = ("box", "gaussian", "kspace") if d.axes == 2 else ("box", "gaussian")
    if not d.profiles or any(p not in known for p in d.profiles):
        raise MedsrError(f"degradation.profiles must be among {', '.join(known)}")
    if len(p.zoom) != 2 or not 1.0 <= p.zoom[0] <= p.zoom[1]:
        raise MedsrError("patch.zoom must be a range [lo, hi] with 1 <= lo <= hi")
    for name, share in (("patch.zoom_probability", p.zoom_probability),
                        ("patch.zoom_kspace_probability", p.zoom_kspace_probability),
                        ("patch.contrast_probability", p.contrast_probability),
                        ("patch.fine_blur_probability", p.fine_blur_probability),
                        ("degradation.noise_probability", d.noise_probability)):
        if not 0.0 <= share <= 1.0:
            raise MedsrError(f"{name} must be between 0 and 1")
    if p.zoom_kspace_probability > 0 and n.spatial_dims != 2:
        raise MedsrError("patch.zoom_kspace_probability needs a 2D network")
    if len(p.fine_blur) != 2 or not 0.0 <= p.fine_blur[0] <= p.fine_blur[1]:
        raise MedsrError("patch.fine_blur must be a range [lo, hi] of FWHM voxels, 0 <= lo <= hi")
    if p.fine_blur_probability > 0 and d.axes == 2:
        raise MedsrError("patch.fine_blur_probability needs a fine axis (degradation.axes: 1)")
    lo, hi = factor_range(d)
    if lo < 1 or hi < lo:
        raise MedsrError("degradation.factor must be a positive integer or a range [lo, hi]")
    if lo != hi and n.input != "interpolated" and not _takes_factor(n.name):
        raise MedsrError("a factor range needs network.input: interpolated, or a network "
                         "with a head per factor (lrrefiner)")
    if lo == hi and p.size[-1] % lo:
        raise MedsrError(f"patch.size[-1] ({p.size[-1]}) must be a multiple of the factor "
                         f"({lo})")
    if cfg.data.modality not in ("MR", "CT"):
        raise MedsrError("data.modality must be MR or CT")
    if o.max_steps < 1 or p.batch_size < 1:
        raise MedsrError("optim.max_steps and patch.batch_size must be positive")
    if not 0.0 <= o.ema < 1.0:
        raise MedsrError("optim.ema must be a decay in [0, 1) (0: no weight averaging)")
    if o.loss not in ("l1", "l2"):
        raise MedsrError("optim.loss must be l1 or l2")
    if not 0.0 <= cfg.distill.weight <= 1.0:
        raise MedsrError("distill.weight must be between 0 and 1")
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML experiment, apply ``{"optim.max_steps": 10, ...}`` overrides, validate."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise MedsrError(f"cannot read config {path}: {str(err).splitlines()[0]}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return validate(_build(TrainConfig, raw, ""))
