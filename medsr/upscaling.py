"""What wraps every method, written once: 4D inputs, slabs, data consistency, uncertainty.

:func:`upscale_volume` (exported as :func:`medsr.upscale`) resolves a request into an
:class:`~medsr.methods.Upscaler` and runs it.

:func:`run` takes the frames ``(T, X, Y, Z)`` of a volume and an
:class:`~medsr.methods.Upscaler` and fills preallocated outputs slab by slab along a
non-upscaled axis (with the method's halo of context), so memory grows with the output, not with
copies of it; large outputs are made on disk (:mod:`medsr.scratch`, as :func:`plan_memory`
decides), and then it grows with the input. For learned methods each slab's estimate is
projected onto the measured slices (:mod:`medsr.consistency`) and its standard deviation
computed from the calibrated model (:mod:`medsr.uncertainty`). A slab and the whole volume give
the same result: the projection acts along the upscaled axis only and the halo covers the
network's reach.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medsr.consistency import SliceProfile, bspline_axes, degrade_axes, project_axes
from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size
from medsr.io import Frames, as_metatensor, make_frames, read_frames, volume_frames
from medsr.io.meta import SourceInfo
from medsr.io.values import DTYPES
from medsr.methods import PlaneUpscaler, Progress, Upscaler, mean_members
from medsr.noise import projection_gain, scan_noise
from medsr.padding import fill_padding, padding_mask, restore_padding
from medsr.resample import INTERPOLATORS
from medsr.scratch import release, scratch_dir, scratch_frames
from medsr.selfcheck import SelfCheck, try_self_check
from medsr.uncertainty import Calibration, calibrate, spread

if TYPE_CHECKING:  # torch and MONAI load where a MetaTensor is made (interpolation needs none)
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

METHODS = ("auto", "default", "self-supervised", *INTERPOLATORS)
PROFILES = ("auto", "box", "gaussian")

#: JPEG 2000 beyond this ratio left the in-plane networks nothing to gain over B-spline on
#: held-out slices (-0.24 to +0.09 dB at 25-100:1; docs/results.md), so ``--method auto``
#: interpolates in-plane requests of such inputs. Through-plane requests keep the network
#: (+1.06 dB at 20:1 and +0.11 at 50:1 on Colin27 compressed slice by slice).
LOSSY_RATIO_LIMIT = 20.0

#: output voxels per slab (160 MiB per float32 copy; fewer slabs, less halo recomputed)
SLAB_VOXELS = 40_000_000
#: the smallest slab the memory plan shrinks to
MIN_SLAB_VOXELS = 2_000_000
#: outputs (with the sd map) from this size up are made on disk (:mod:`medsr.scratch`)
SCRATCH_OUTPUT_BYTES = 2**30
#: working set of a learned method beyond input and outputs, fitted to measurements
#: (``benchmarks/slab_memory.py``, default CT model, slabs of 9-26 M voxels): per slab voxel,
#: float32 copies (the views with their halo, the projection's correction, the output pages
#: until they are dropped; 4 measured there, 6.5 kept: end-to-end runs of long volumes,
#: whose thin slabs carry more halo, measured up to that, ``benchmarks/cost_curve.py``); fixed, the
#: model, ONNX Runtime's session and activations (0.53 GiB measured), and with an uncertainty
#: map the calibration's in-plane volumes and the sd maps' copies (0.32 GiB more measured)
SLAB_COPIES, ACTIVATION_BYTES, UNCERTAINTY_BYTES = 6.5, 560 * 2**20, 340 * 2**20


@dataclass
class Report:
    """What a run did: per-frame consistency figures and the uncertainty calibration."""

    consistency: bool = False
    psnr_before: list[float] = field(default_factory=list)
    psnr_after: list[float] = field(default_factory=list)
    calibration: Calibration | None = None
    selfcheck: SelfCheck | None = None
    noise_sd: float = 0.0  # of the measured samples; the projection fits within it
    residual_sd: list[float] = field(default_factory=list)  # RMS of input - re-degraded
    gain: float | None = None  # of the projection (1: exact; None: per slab)

    def describe(self) -> str:
        parts = []
        if self.psnr_after:
            after = min(self.psnr_after)
            parts.append(f"re-degraded vs input {_db(min(self.psnr_before))} -> {_db(after)}"
                         if self.consistency else f"re-degraded vs input {_db(after)}")
            if self.noise_sd > 0 and self.residual_sd:
                parts[-1] += (f" (residual {max(self.residual_sd) / self.noise_sd:.2f}× the "
                              f"noise sd {self.noise_sd:.3g})")
        return "; ".join(parts)


def _db(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def _slabs(up: Upscaler, shape: tuple[int, ...], voxels: int):
    """``(axis, [(start, stop), ...])`` covering the frame; one slab when it cannot split."""
    if not up.slab_axes:
        return None, [(0, 0)]
    # the last such axis varies slowest in a disk-backed output (frames are stored in Fortran
    # order), so a slab's pages are its own and leave memory with it; unless it is short
    axes = up.slab_axes
    axis = axes[-1] if 2 * shape[axes[-1]] >= max(shape[a] for a in axes) \
        else max(axes, key=lambda a: shape[a])
    per_index = int(np.prod(up.out_shape)) // up.out_shape[axis]
    size = max(1, min(shape[axis], voxels // max(1, per_index)))
    n = math.ceil(shape[axis] / size)
    size = math.ceil(shape[axis] / n)
    return axis, [(s, min(shape[axis], s + size)) for s in range(0, shape[axis], size)]


def _slab_extent(up: Upscaler, shape: tuple[int, ...], voxels: int) -> int:
    """Output voxels of the largest slab with its halo: what the method holds at a time (the
    halo nearly doubles thin slabs of long volumes)."""
    axis, slabs = _slabs(up, shape, voxels)
    if axis is None:
        return int(np.prod(up.out_shape))
    per_index = int(np.prod(up.out_shape)) // up.out_shape[axis]
    return per_index * max(min(shape[axis], stop + up.halo) - max(0, start - up.halo)
                           for start, stop in slabs)


def _take(array: np.ndarray, axis: int | None, start: int, stop: int) -> np.ndarray:
    if axis is None:
        return array
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]


def run(frames: np.ndarray, up: Upscaler, *, consistency: bool = True,
        uncertainty: bool = False, progress: Progress = None,
        slab_voxels: int = SLAB_VOXELS, scratch: str | Path | None = None,
        fallback: bool = False) -> tuple[np.ndarray | None, np.ndarray | None, Report]:
    """Upscale every frame with ``up``; returns ``(output, sd or None, report)``.

    A learned method first checks itself against B-spline on the scan's own in-plane truth
    (:mod:`medsr.selfcheck`, in ``report.selfcheck``).

    Args:
        frames: ``(T, X, Y, Z)`` in the scan's units (T = 1 for a 3D volume).
        up: the method; prepared here once, on the first frame (or the mean of a 4D series).
        consistency: project learned outputs onto the measured slices.
        uncertainty: also return the calibrated standard deviation (learned methods only).
        slab_voxels: output voxels per slab (bounds memory).
        scratch: a folder to make the outputs in on disk (:mod:`medsr.scratch`; their pages
            are dropped from memory after each slab); default: in memory.
        fallback: stop right after a failed self-check, returning ``(None, None, report)``.
    """
    learned = up.learned and bool(up.operators())
    if uncertainty and not learned:
        raise ValueError("an uncertainty map needs a learned method")
    t = frames.shape[0]
    reference = frames[0] if t == 1 else frames.mean(axis=0, dtype=np.float32)
    share = 0.7 if "self-supervised" in up.name else 0.0
    if learned and up.noise_sd is None:
        up.noise_sd = scan_noise(up, reference, frames=frames)
        logger.info("noise of the measured samples: sd %.4g (scan units)", up.noise_sd)
    up.prepare(reference, progress=(lambda p: progress(share * p)) if progress else None)
    report = Report(consistency=consistency and learned,
                    noise_sd=float(up.noise_sd or 0.0) if learned else 0.0)
    if learned:
        report.selfcheck = try_self_check(up, reference, report.consistency)
        if report.selfcheck is not None and up.consistency_gain is None:
            up.consistency_gain = report.selfcheck.gain  # every slab projected alike
        report.gain = up.consistency_gain
        if fallback and report.selfcheck is not None and not report.selfcheck.passed:
            return None, None, report
    if uncertainty:
        report.calibration = calibrate(up, reference, consistency=report.consistency)
    def allocate() -> np.ndarray:
        if scratch is None:
            return np.empty((t, *up.out_shape), dtype=np.float32)
        return scratch_frames(t, up.out_shape, scratch)

    out = allocate()
    sd = allocate() if uncertainty else None
    axis, slabs = _slabs(up, frames.shape[1:], slab_voxels)
    steps, done = t * len(slabs), 0
    for i in range(t):
        sums = np.zeros(2)  # squared re-degradation error before and after the projection
        for start, stop in slabs:
            def step(p: float, done: int = done) -> None:
                progress(share + (1 - share) * (done + p) / steps)

            sums += _slab(frames[i], up, axis, start, stop, report, out[i],
                          sd[i] if sd is not None else None, step if progress else None)
            release(out, sd)
            done += 1
        if learned:
            peak = float(frames[i].max() - frames[i].min()) or 1.0
            psnr = [math.inf if e == 0 else 10 * math.log10(peak * peak * frames[i].size / e)
                    for e in sums]
            report.psnr_before.append(psnr[0])
            report.psnr_after.append(psnr[1] if report.consistency else psnr[0])
            report.residual_sd.append(math.sqrt(
                (sums[1] if report.consistency else sums[0]) / frames[i].size))
    return out, sd, report


def _slab(frame: np.ndarray, up: Upscaler, axis: int | None, start: int, stop: int,
          report: Report, out: np.ndarray, sd: np.ndarray | None, progress: Progress
          ) -> np.ndarray:
    """Upscale one slab ``[start, stop)`` of ``frame`` along ``axis`` into ``out`` (and
    ``sd``); returns the squared re-degradation errors before and after the projection."""
    lo, hi = (max(0, start - up.halo), min(frame.shape[axis], stop + up.halo)) \
        if axis is not None else (0, 0)
    src = _take(frame, axis, lo, hi)
    members = up.predict(src, progress=progress,
                         core=(axis, start - lo, stop - lo) if axis is not None else None)

    def crop(a: np.ndarray) -> np.ndarray:
        return _take(a, axis, start - lo, stop - lo) if axis is not None else a

    spread_map = None
    if sd is not None:  # before the views are averaged in place
        spread_map = crop(spread(members)) if len(members) > 1 else \
            _flip_spread(up, src, members[0], crop)
    estimate = mean_members(members)
    del members
    estimate = crop(estimate)
    sums = np.zeros(2)
    ops = up.operators()
    if ops:
        lr = crop(src)
        sums[0] = _sq_error(estimate, lr, ops)
        if report.consistency:
            estimate = project_axes(estimate, lr, ops, in_place=True,
                                    gain=projection_gain(up, [(estimate, lr)]))
            sums[1] = _sq_error(estimate, lr, ops)
        if sd is not None:
            refinement = bspline_axes(lr, ops)
            np.subtract(estimate, refinement, out=refinement)
            _take(sd, axis, start, stop)[...] = report.calibration.sd(spread_map, refinement)
    _take(out, axis, start, stop)[...] = estimate
    return sums


def _sq_error(estimate: np.ndarray, lr: np.ndarray, ops) -> float:
    """Sum of squared differences between the re-degraded estimate and the measured slab."""
    diff = degrade_axes(estimate, ops) - lr
    return float(np.sum(np.square(diff, dtype=np.float64)))


def _flip_spread(up: Upscaler, src: np.ndarray, member: np.ndarray, crop) -> np.ndarray:
    """Spread between a one-view prediction and its prediction on the mirrored input."""
    flip_axis = [a for a in range(3) if a != up.axis][-1] if up.axis is not None else 0
    flipped = np.flip(up.predict(np.flip(src, flip_axis).copy())[0], flip_axis)
    return crop(spread([member, np.ascontiguousarray(flipped)]))


def profile_for(thickness_mm: float | None, spacing_mm: float, kind: str = "box"
                ) -> SliceProfile:
    """The slice profile from a thickness in mm (default: as thick as the spacing)."""
    if thickness_mm is None:
        return SliceProfile(kind, 1.0)
    if not thickness_mm > 0:
        raise MedsrError(f"the slice thickness must be positive, got {thickness_mm}")
    return SliceProfile(kind, float(thickness_mm) / float(spacing_mm))


def upscale_volume(volume: str | Path | MetaTensor | Frames,
                   scale: Sequence[int] | None = None, *,
                   spacing: Sequence[float] | None = None, isotropic: float | None = None,
                   method: str = "auto",
                   model: str | Path | None = None, modality: str | None = None,
                   device: str = "auto", series_uid: str | None = None,
                   progress: Callable[[float], None] | None = None,
                   self_supervised: dict | None = None, consistency: bool = True,
                   uncertainty: bool = False, slice_thickness: float | None = None,
                   slice_profile: str | None = None, max_memory_gb: float | None = None,
                   scratch: str | Path | None = None, save_format: str | None = None,
                   noise_sd: float | None = None, skip_background: bool = False
                   ) -> MetaTensor | Frames | tuple[MetaTensor | Frames, MetaTensor | Frames]:
    """Upscale a volume onto a finer grid covering the same physical extent.

    Args:
        volume: a path (NIfTI, DICOM folder, NRRD, ...) or a MetaTensor ``(1, X, Y, Z)``,
            ``(T, X, Y, Z)`` (4D: every volume the same way) or ``(X, Y, Z)`` with an affine;
            or :class:`~medsr.io.Frames` (:func:`~medsr.io.read_frames`), and then the
            results are Frames too (no torch or MONAI loads for interpolation).
        scale: integer factor per stored array axis, e.g. ``(1, 1, 4)`` for 4× thinner slices.
            Default: every spacing brought down to the smallest by an integer factor (the
            factor a model serves is clipped to its trained range).
        spacing: target spacing in mm per array axis instead of ``scale``, met exactly:
            learned methods upscale by the integer factor at or above each axis's ratio
            (the in-plane model on two equal factors of the finest axes, the through-plane
            model on a thick axis, both chained), then resample onto the spacing.
        isotropic: a target spacing in mm on every axis (``spacing=(mm, mm, mm)``).
        method: ``"auto"`` (the shipped default model for the modality when it covers the
            request, else B-spline), ``"default"`` (the shipped model, or an error),
            ``"self-supervised"`` (fit a model to the scan's own in-plane slices, see
            :mod:`medsr.selfsup`; after the in-plane model when the plane is upscaled too),
            ``"bspline"`` (cubic) or ``"linear"``. Ignored when
            ``model`` is given.
        model: a trained model folder (``weights.safetensors`` + ``card.json``) or its
            ``.safetensors`` file.
        modality: ``"CT"`` or ``"MR"`` to choose the default model; default from the DICOM
            header, else guessed from the intensities (air at -1000 HU means CT).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"`` for models.
        series_uid: DICOM series to read when ``volume`` is a folder with several.
        progress: optional callback receiving the fraction done.
        self_supervised: options for ``method="self-supervised"``: ``budget_seconds``,
            ``steps``, ``seed``, ``init``, ``save_model`` (a folder to keep the fitted model
            in, reusable with ``model=``).
        consistency: project a learned output onto the measured slices, so that degraded
            again with the slice profile it reproduces the input (see :mod:`medsr.consistency`).
        uncertainty: also return a calibrated voxel-wise standard deviation (scan units, same
            grid) of a learned output (see :mod:`medsr.uncertainty`).
        slice_thickness: slice thickness in mm along the upscaled axis (default: DICOM
            SliceThickness, else the spacing).
        slice_profile: ``"auto"`` (estimate shape and width from the image even when the
            header gives a thickness), ``"box"`` or ``"gaussian"``.
        max_memory_gb: refuse, before any work, a request whose estimated peak memory
            (:mod:`medsr.memory`) exceeds this; default: the memory available. Outputs of
            1 GiB or more, or too large for this limit, are made on disk and slabs shrink to
            fit (see :mod:`medsr.scratch`); the result then views a temporary file that
            disappears with it.
        scratch: folder for such disk-backed outputs (default ``$MEDSR_SCRATCH``, else the
            system's temporary folder; the CLI uses the output's folder).
        save_format: the format the result will be saved in (``nifti``, ``dicom``, ``nrrd``,
            ``mha``), for the memory check: NIfTI and DICOM are written a chunk at a time,
            NRRD/MHA whole. Default: a streamed format.
        noise_sd: the noise standard deviation of the measured samples (scan units) for
            learned methods: the consistency projection reproduces the input within it, and
            self-supervised pairs carry it (:mod:`medsr.noise`). Default: measured on the
            scan; 0: exact consistency, noise-free pairs.
        skip_background: through-plane networks compute only the lines whose receptive field
            touches the body; the background (air, the noise floor) takes B-spline's values
            (:mod:`medsr.background`; the body's output is unchanged, bit for bit; off by
            default, see ``docs/speed.md``).

    Returns:
        A MetaTensor ``(T, X', Y', Z')`` whose affine follows :mod:`medsr.geometry`'s
        subdivision convention; ``meta["medsr_method"]`` says what ran, and for learned
        methods ``meta["medsr_consistency_psnr"]`` (dB, the re-degraded output against the
        input; ``medsr_consistency_residual_sd`` its RMS, against the measured
        ``medsr_noise_sd``, with the projection's ``medsr_consistency_gain``),
        ``meta["medsr_slice_profile"]``, ``meta["medsr_operators"]`` (each upscaled axis's
        operator) and ``meta["medsr_selfcheck"]`` (PSNR of the network and of B-spline
        on the scan's own truth, :mod:`medsr.selfcheck`; with ``method="auto"`` and no
        ``uncertainty``, a network that does not beat B-spline there gives way to B-spline,
        the check still recorded); self-supervised SR adds ``meta["medsr_self_supervised"]``
        (steps, why it stopped, held-out PSNR against B-spline). With ``uncertainty=True``, a
        pair ``(output, sd)``. Its source info is kept, so :func:`save_volume` writes the same
        format and dtype as the input. Given :class:`~medsr.io.Frames`, the results are
        Frames with the same ``meta``.

    Example:
        >>> from medsr import upscale, save_volume
        >>> sr = upscale("scan.nii.gz", scale=(1, 1, 3))          # doctest: +SKIP
        >>> save_volume(sr, "scan_sr.nii.gz")                      # doctest: +SKIP
    """
    if method not in METHODS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if slice_profile not in (None, *PROFILES):
        raise MedsrError(f"unknown slice profile {slice_profile!r}; choose one of "
                         f"{', '.join(PROFILES)}")
    if isotropic is not None:
        if spacing is not None:
            raise MedsrError("give either --spacing or --isotropic, not both")
        spacing = (float(isotropic),) * 3
    plain = isinstance(volume, Frames)
    frames, affine, source = _read(volume, series_uid)
    kind = _modality(frames, source, modality, learned=model is not None
                     or method not in INTERPOLATORS)
    route = choose_route(frames, affine, source, kind, method=method, scale=scale,
                         spacing=spacing, model=model, device=device,
                         self_supervised=self_supervised, noise_sd=noise_sd,
                         uncertainty=uncertainty, slice_thickness=slice_thickness,
                         slice_profile=slice_profile, skip_background=skip_background)
    done = _execute(frames, affine, source, kind, route, consistency=consistency,
                    uncertainty=uncertainty, progress=progress, max_memory_gb=max_memory_gb,
                    scratch=scratch, save_format=save_format)
    result, uncertainty_map = _annotate(done, route, source)
    if not plain:  # the input's affine is the outputs' original_affine
        result = as_metatensor(result, original_affine=affine)
        if uncertainty_map is not None:
            uncertainty_map = as_metatensor(uncertainty_map, original_affine=affine)
    return result if uncertainty_map is None else (result, uncertainty_map)


@dataclass
class Route:
    """How a request runs, as :func:`choose_route` decided it.

    Attributes:
        up: the method, sized for the request.
        auto: ``--method auto`` with nothing forcing the network (no model, no uncertainty):
            a network that loses the self-check to B-spline gives way to it.
        lossy: the input's lossy-compression note when a learned method runs on it.
        thick: the through-plane member of ``up`` (its slice profile set), if any.
    """

    up: Upscaler
    auto: bool
    lossy: str | None = None
    thick: Upscaler | None = None


@dataclass
class Outcome:
    """What :func:`_execute` made: the output frames (and sd), how, and what it checked."""

    out: np.ndarray
    sd: np.ndarray | None
    report: Report
    up: Upscaler  # the method that made ``out`` (B-spline after a fall-back)
    checked: str  # the method the self-check judged
    out_affine: np.ndarray
    padded: dict | None = None


def _read(volume, series_uid: str | None) -> tuple[np.ndarray, np.ndarray, SourceInfo]:
    """The frames, affine and source of the input; refused when it holds NaN or Inf."""
    if isinstance(volume, (str, Path)):
        volume = read_frames(volume, series_uid=series_uid)
    try:
        frames, affine, source = volume_frames(volume)
    except ValueError as err:
        raise MedsrError(str(err)) from None
    bad = int(np.count_nonzero(~np.isfinite(frames)))
    if bad:
        raise MedsrError(f"{source.path or 'input'} has {bad} NaN/Inf voxels; "
                         "replace them before upscaling")
    return frames, affine, source


def _modality(frames: np.ndarray, source: SourceInfo, modality: str | None, learned: bool
              ) -> str:
    """``"CT"`` or ``"MR"``: as given, else the header's, else guessed from the intensities
    when a model will run (interpolation needs none)."""
    kind = modality or source.modality
    if kind is None and learned:
        from medsr.transforms.intensity import guess_modality

        kind = guess_modality(frames[0])
    kind = (kind or "MR").upper()
    if kind not in ("CT", "MR"):
        raise MedsrError(f"unknown modality {modality!r}; use ct or mr")
    return kind


def choose_route(frames: np.ndarray, affine: np.ndarray, source: SourceInfo, kind: str, *,
                 method: str, scale: Sequence[int] | None, spacing: Sequence[float] | None,
                 model: str | Path | None, device: str, self_supervised: dict | None,
                 noise_sd: float | None, uncertainty: bool, slice_thickness: float | None,
                 slice_profile: str | None, skip_background: bool = False) -> Route:
    """The one place where a request becomes a method: the user's method (or model), the
    lossy-input rule (:data:`LOSSY_RATIO_LIMIT`), the noise level and the slice profile.
    The self-check's fall-back to B-spline happens while running (:func:`_execute`);
    ``skip_background`` reaches every network stage (:mod:`medsr.background`).

    An in-plane request goes to the in-plane network, not to the through-plane network run
    along each plane axis: on 8 held-out real scans the in-plane network was better on every
    one (by 0.65 to 6.56 dB), and weighing the two on the scan's own slices picked the worse
    on 2 of the 3 CT scans (``benchmarks/route_choice.py``, docs/results.md)."""
    from medsr.methods import make_upscaler

    up = make_upscaler(frames.shape[1:], affine, method=method, scale=scale, spacing=spacing,
                       model=model, modality=kind, device=device,
                       self_supervised=_selfsup_options(self_supervised))
    for stage in getattr(up, "stages", None) or [up]:
        if hasattr(stage, "skip_background"):
            stage.skip_background = skip_background
    if noise_sd is not None:
        if not (math.isfinite(noise_sd) and noise_sd >= 0):
            raise MedsrError(f"the noise sd must be 0 or more, got {noise_sd}")
        up.noise_sd = float(noise_sd)
    if uncertainty and not up.learned:
        raise MedsrError(f"an uncertainty map needs a learned method, not {up.name} "
                         "(use --method default, --self-supervised or --model)")
    lossy = source.lossy_compression() if up.learned else None
    ratio = source.lossy_ratio() if lossy is not None else None
    auto = method == "auto" and model is None and not uncertainty
    if auto and ratio is not None and ratio > LOSSY_RATIO_LIMIT and isinstance(up, PlaneUpscaler):
        logger.warning("method auto: %s was lossily compressed %.0f:1, over %.0f:1, where the "
                       "in-plane networks gain nothing over B-spline, so using B-spline",
                       source.path or "the input", ratio, LOSSY_RATIO_LIMIT)
        up = make_upscaler(frames.shape[1:], affine, method="bspline", scale=scale,
                           spacing=spacing)
    elif lossy is not None:
        logger.warning("%s was lossily compressed before (%s): its finest detail is partly "
                       "compression artefacts, which the models did not learn from and the "
                       "self-check may not see; compare with --method bspline",
                       source.path or "the input", lossy)
    thick = up.through_plane()
    if thick is not None:  # its own axis, the same index on the input's grid
        header = source.extra.get("slice_thickness") if thick.axis == 2 else None  # DICOM
        thickness = (slice_thickness or (self_supervised or {}).get("slice_thickness")
                     or header)
        thick.profile = _profile(frames, affine, thick.axis, thickness, slice_profile)
    return Route(up, auto, lossy, thick)


def _execute(frames: np.ndarray, affine: np.ndarray, source: SourceInfo, kind: str,
             route: Route, *, consistency: bool, uncertainty: bool, progress: Progress,
             max_memory_gb: float | None, scratch: str | Path | None,
             save_format: str | None) -> Outcome:
    """Run the route within its memory plan: CT padding filled and put back, B-spline when
    ``--method auto``'s network loses the self-check, the exact spacing resampled last."""
    from medsr.methods import make_upscaler

    up = route.up
    plan = _plan(frames, up, source, uncertainty, max_memory_gb, save_format)
    logger.info("upscaling %s -> %s with %s", frames.shape[1:], up.out_shape, up.name)
    padding = padding_mask(frames, kind) if up.learned else None  # CT outside its circle
    padded = None
    out, sd, report = run(frames if padding is None else fill_padding(frames, padding), up,
                          consistency=consistency, uncertainty=uncertainty,
                          progress=progress, slab_voxels=plan.slab_voxels,
                          scratch=scratch_dir(scratch) if plan.on_disk else None,
                          fallback=route.auto)
    check, checked = report.selfcheck, up.name
    if out is None:  # --method auto and the network lost to B-spline on this scan
        logger.warning("method auto: %s: not better, so using B-spline", check.describe(up.name))
        up = make_upscaler(frames.shape[1:], affine, method="bspline",
                           scale=None if up.final_spacing else up.factors,
                           spacing=up.final_spacing)
        plan = _plan(frames, up, source, False, max_memory_gb, save_format)
        out, sd, report = run(frames, up, progress=progress, slab_voxels=plan.slab_voxels,
                              scratch=scratch_dir(scratch) if plan.on_disk else None)
        report.selfcheck = check
    else:
        if check is not None and not check.passed:
            logger.warning("%s; the %s output is kept as asked (method auto would use "
                           "B-spline)", check.describe(up.name), up.name)
        if padding is not None and restore_padding(out, frames, padding, sd):
            values = frames[padding]
            padded = {"voxels": int(values.size), "share": round(float(padding.mean()), 4),
                      "range_hu": [float(values.min()), float(values.max())]}
    if up.learned:
        logger.info("%s: %s", up.name, report.describe())
    out_affine = up.out_affine
    if up.final_spacing is not None:  # a learned method's integer grid -> the exact spacing
        out, sd, out_affine = to_spacing(out, sd, up, up.final_spacing)
    return Outcome(out, sd, report, up, checked, out_affine, padded)


def _annotate(done: Outcome, route: Route, source: SourceInfo
              ) -> tuple[Frames, Frames | None]:
    """The output (and sd) frames with the ``medsr_*`` metadata of what ran (see
    :func:`upscale_volume`'s Returns)."""
    up, report, thick = done.up, done.report, route.thick
    result = _wrap(done.out, done.out_affine, source)
    meta = result.meta
    meta["medsr_method"] = up.name
    if report.selfcheck is not None:
        meta["medsr_selfcheck"] = {**report.selfcheck.as_dict(), "method": done.checked}
    if done.padded is not None:
        meta["medsr_padding"] = done.padded
    if route.lossy is not None:
        meta["medsr_input_lossy"] = route.lossy
    if thick is not None and "self-supervised" in up.name:  # steps, stopping, held-out PSNR
        meta["medsr_self_supervised"] = selfsup_summary(thick.card)
    ops = up.operators()
    if ops:
        prof = thick.profile if thick is not None else ops[0][2]
        meta["medsr_slice_profile"] = {"kind": prof.kind, "width": round(prof.width, 4)}
        meta["medsr_operators"] = [
            {"axis": a, "factor": f, "profile": p.kind, "width": round(p.width, 4)}
            for a, f, p in ops]
        meta["medsr_consistency_psnr"] = min(report.psnr_after)
        meta["medsr_consistency_psnr_before"] = min(report.psnr_before)
        meta["medsr_noise_sd"] = report.noise_sd
        meta["medsr_consistency_residual_sd"] = max(report.residual_sd)
        meta["medsr_consistency_gain"] = report.gain
    if up.learned:
        card = getattr(up, "card", None) or getattr(thick, "card", None) or {}
        meta["medsr_model"] = model_summary(card)
    if done.sd is None:
        return result, None
    uncertainty_map = _wrap(done.sd, done.out_affine, source, dtype="float32")
    uncertainty_map.meta["medsr_method"] = f"{up.name} uncertainty (sd)"
    meta["medsr_uncertainty"] = report.calibration.as_dict()
    return result, uncertainty_map


def to_spacing(out: np.ndarray, sd: np.ndarray | None, up: Upscaler,
               spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Resample a learned output (and its sd map) from its integer-factor grid onto the grid of
    exactly ``spacing`` that covers the same extent (:func:`medsr.geometry.target_grid`):
    cubic B-spline for the output, linear for the sd. Returns ``(out, sd, affine)``."""
    from medsr.geometry import target_grid
    from medsr.resample import resample_index_space

    shape, affine, _ = target_grid(up.shape, up.affine, target_spacing=spacing)
    if shape == tuple(up.out_shape) and np.allclose(affine, up.out_affine, atol=1e-6):
        return out, sd, up.out_affine
    to_grid = np.linalg.solve(up.out_affine, affine)
    ratio, offset = np.diag(to_grid)[:3], to_grid[:3, 3]
    logger.info("resampling the learned %s grid onto %s mm (%s)", up.out_shape,
                "×".join(f"{t:g}" for t in spacing), "×".join(str(n) for n in shape))

    def each(frames: np.ndarray, method: str) -> np.ndarray:
        return np.stack([resample_index_space(f, shape, ratio, offset, method) for f in frames])

    return each(out, "bspline"), (each(sd, "linear") if sd is not None else None), affine


def model_summary(card: dict) -> dict:
    """The few facts of a model card kept in the output's metadata (``medsr_model``)."""
    selfsup = card.get("self_supervised") or {}
    return {"name": card.get("name"), "network": (card.get("network") or {}).get("name"),
            "spatial_dims": card.get("spatial_dims"), "factors": card.get("factors"),
            "modality": card.get("modality"), "experiment": card.get("experiment"),
            "steps": selfsup.get("steps", card.get("steps")),
            "self_supervised": bool(selfsup),
            "training_data": len(card.get("training_data") or [])}


def working_set_bytes(learned: bool, one_axis: bool, slab: int, uncertainty: bool = False
                      ) -> int | None:
    """A method's working set for slabs of ``slab`` output voxels, beyond input and outputs
    (``None``: SimpleITK's whole-volume path, modelled in :mod:`medsr.memory`)."""
    from medsr.memory import fast_work_bytes

    if learned:
        return SLAB_COPIES * 4 * slab + ACTIVATION_BYTES + UNCERTAINTY_BYTES * bool(uncertainty)
    if one_axis:  # the one-axis path's own slabs, the slab it returns, the output's pages
        return fast_work_bytes() + 3 * 4 * slab  # 3 copies: measured at 499 M voxels
    return None


@dataclass
class MemoryPlan:
    """How a request runs within its memory limit: outputs on disk or not, slab size, and the
    estimated peak (bytes) of the whole run."""

    on_disk: bool
    slab_voxels: int
    peak_bytes: int


def plan_memory(frames_shape: Sequence[int], up: Upscaler, *, in_dtype: str = "float32",
                uncertainty: bool = False, limit_bytes: int | None = None,
                save_format: str | None = None) -> MemoryPlan:
    """The memory plan of a request (see :mod:`medsr.memory`); nothing is checked here.

    Outputs (with their sd map) of :data:`SCRATCH_OUTPUT_BYTES` or more, or that would not
    fit in memory, are made on disk; slabs shrink from :data:`SLAB_VOXELS` (halving, down to
    :data:`MIN_SLAB_VOXELS`) until the working set fits ``limit_bytes`` (default: the memory
    available).

    Args:
        frames_shape: ``(T, X, Y, Z)`` of the input.
        up: the method (a self-supervised one need not be fitted yet).
        in_dtype: stored dtype of the input.
        uncertainty: an sd map is made too.
        save_format: the output format (NRRD/MHA are written whole, the others streamed).
    """
    from medsr.memory import available_memory_bytes, estimate_peak_bytes

    t, shape = int(frames_shape[0]), tuple(int(s) for s in frames_shape[1:])
    per_frame = int(np.prod(up.out_shape))
    outputs = 1 + bool(uncertainty)
    budget = available_memory_bytes() if limit_bytes is None else limit_bytes

    def estimate(on_disk: bool, slab: int) -> int:
        work = working_set_bytes(up.learned, up.axis is not None,
                                 _slab_extent(up, shape, slab), uncertainty)
        return estimate_peak_bytes((t, *shape), (t, *up.out_shape),
                                   up.name if not up.learned else "learned", in_dtype=in_dtype,
                                   work_bytes=work, one_axis=up.axis is not None,
                                   outputs=outputs, on_disk=on_disk,
                                   streamed=save_format not in ("nrrd", "mha"))

    slab = min(SLAB_VOXELS, per_frame)
    on_disk = bool(up.slab_axes) and (4 * t * per_frame * outputs >= SCRATCH_OUTPUT_BYTES
                                      or estimate(False, slab) > budget)
    while up.slab_axes and estimate(on_disk, slab) > budget and slab > MIN_SLAB_VOXELS:
        slab = max(MIN_SLAB_VOXELS, slab // 2)
    return MemoryPlan(on_disk, slab, estimate(on_disk, slab))


def _plan(frames: np.ndarray, up: Upscaler, source: SourceInfo, uncertainty: bool,
          max_memory_gb: float | None, save_format: str | None) -> MemoryPlan:
    """:func:`plan_memory` for this request, or a one-line refusal when even outputs on disk
    and the smallest slabs would not fit."""
    from medsr.memory import GiB, check_memory

    limit = None if max_memory_gb is None else int(max_memory_gb * GiB)
    plan = plan_memory(frames.shape, up, uncertainty=uncertainty, limit_bytes=limit,
                       in_dtype=source.dtype if source.dtype in DTYPES else "float32",
                       save_format=save_format)
    t = frames.shape[0]
    shape = "×".join(str(s) for s in up.out_shape)
    check_memory(plan.peak_bytes, limit,
                 what=f"upscaling to {shape}" + (f" ×{t} volumes" if t > 1 else "")
                 + f" with {up.name}")
    if plan.on_disk or plan.slab_voxels < min(SLAB_VOXELS, int(np.prod(up.out_shape))):
        logger.info("memory plan: outputs %s, slabs of %.1f M voxels",
                    "on disk" if plan.on_disk else "in memory", plan.slab_voxels / 1e6)
    return plan


def _wrap(out: np.ndarray, out_affine: np.ndarray, source: SourceInfo,
          dtype: str | None = None) -> Frames:
    """The output frames ``(T, ...)`` with the source's info (and dtype unless given)."""
    if dtype is not None:
        source = copy.copy(source)
        source.dtype = dtype
    return make_frames(out, out_affine, source)


def selfsup_summary(card: dict) -> dict:
    """What a self-supervised fit did, for the output's metadata (see :mod:`medsr.selfsup`)."""
    keys = ("steps", "best_step", "stopped", "seconds", "held_out_slices", "held_out_psnr",
            "held_out_psnr_bspline", "held_out_gain_db", "pair_noise_sd", "weight_average",
            "held_out_psnr_fitted")
    fitted = card.get("self_supervised", {})
    return {k: fitted[k] for k in keys if k in fitted}


def _selfsup_options(options: dict | None) -> dict:
    """Self-supervised options without the ones handled here (thickness)."""
    return {k: v for k, v in (options or {}).items() if k != "slice_thickness"}


def _profile(frames, affine, axis, thickness, kind):
    """The slice profile of ``axis``: estimated from the image with ``auto``, else a box (or
    ``kind``) as thick as the given thickness, or as the spacing when none is known (the
    common clinical case; the estimate is on request only, see README for its accuracy)."""
    d = float(voxel_size(affine)[axis])
    if kind == "auto":
        from medsr.profile import estimate_profile

        ref = frames[0] if frames.shape[0] == 1 else frames.mean(axis=0)
        try:
            est = estimate_profile(ref, affine, axis)
        except MedsrError as err:
            logger.warning("slice profile not estimated (%s); using a box as thick as the "
                           "spacing", err)
            return profile_for(thickness, d)
        logger.info("estimated slice profile: %s", est.describe())
        return est
    return profile_for(thickness, d, kind or "box")
