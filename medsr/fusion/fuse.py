"""``medsr.fuse``: one isotropic volume from several thick-slice stacks of one subject.

The steps, each in its own module:

1. read the stacks and check them (3D, two at least, fields of view that overlap);
2. register every stack to the reference (the first; :mod:`medsr.fusion.register`), on their
   cubic B-splines, and leave out a stack that does not register, with one line;
3. the common grid (:mod:`medsr.fusion.grid`): the stacks' common extent (or union) in the
   reference's orientation, isotropic at the finest in-plane spacing unless told;
4. the prior (``prior="learned"``): each stack upscaled by medsr's default model for its
   modality (:func:`medsr.upscaling.upscale_volume`, with its own consistency projection),
   carried onto the grid through its transform, the mean where several cover a voxel;
   ``prior="none"``: the mean of the stacks' B-splines, as the start only;
5. the joint solve (:mod:`medsr.fusion.solve`) over every stack's own operator
   (:mod:`medsr.fusion.operators`): reproduce each stack within its measured noise, by the
   smoothest change to the prior; a stack that the others, fused without it, predict far
   beyond its noise is left out, with one line (:func:`fit`).

The result carries, in ``meta["medsr_fuse"]``, each stack's registration (matrix, rotation,
shift, correlation), its consistency after the solve (PSNR of the re-degraded volume against
the stack, the residual against its noise) or why it was left out, and the solve's settings.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsr.consistency import SliceProfile
from medsr.errors import MedsrError
from medsr.fusion.grid import (
    EXTENTS,
    Grid,
    centre_of,
    common_grid,
    corners,
    covered_part,
    index_map,
    resample_onto,
)
from medsr.fusion.register import Registration, register
from medsr.fusion.solve import SMOOTH, solve
from medsr.geometry import spacing as voxel_size
from medsr.io import Frames, as_metatensor, make_frames, read_frames, volume_frames
from medsr.upscaling import _db, upscale_volume

if TYPE_CHECKING:
    from monai.data import MetaTensor

logger = logging.getLogger(__name__)

PRIORS = ("learned", "none")
#: a stack whose residual RMS after the joint solve is over SUSPECT times the larger of its
#: noise sd and the others' median residual is suspect; it is left out when the others, solved
#: without it, predict it no better than OUTLIER times that (three stacks or more; :func:`fit`)
SUSPECT, OUTLIER = 2.0, 4.0
#: thick axes closer than this (degrees) count as one direction
PARALLEL_DEGREES = 45.0
#: the most conjugate-gradient steps
ITERATIONS = 30
#: stack voxels kept around the grid's box for the learned SR (the networks' context)
SR_MARGIN = 8
Progress = Callable[[float], None] | None


@dataclass(eq=False)
class Stack:
    """One input stack: its voxels ``(X, Y, Z)``, RAS affine, and what fusing learns of it."""

    name: str
    array: np.ndarray
    affine: np.ndarray
    frames: Frames
    noise_sd: float = 0.0
    profile: SliceProfile = field(default_factory=SliceProfile)
    registration: Registration | None = None
    left_out: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def thick_axis(self) -> int:
        return int(np.argmax(voxel_size(self.affine)))

    @property
    def transform(self) -> np.ndarray:
        return np.eye(4) if self.registration is None else self.registration.transform

    def cropped(self, grid: Grid, margin: int) -> tuple[np.ndarray, np.ndarray]:
        """``(array, affine)`` of the stack's voxels within ``margin`` voxels of the grid's
        box (where it lies through the stack's transform): the rest is never seen."""
        to_stack = np.linalg.inv(index_map(grid.affine, self.affine, self.transform))
        pts = corners(grid.shape, np.eye(4)) @ to_stack[:3, :3].T + to_stack[:3, 3]
        n = np.asarray(self.array.shape)
        lo = np.clip(np.floor(pts.min(axis=0)).astype(int) - margin, 0, n)
        hi = np.clip(np.ceil(pts.max(axis=0)).astype(int) + margin + 1, lo, n)
        t = np.eye(4)
        t[:3, 3] = lo
        return (self.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                self.affine @ t)

    def describe(self) -> str:
        sp = "×".join(f"{s:.3g}" for s in voxel_size(self.affine))
        return f"{'×'.join(str(n) for n in self.array.shape)} at {sp} mm"


def _read(item: Any, index: int) -> tuple[str, Frames]:
    if isinstance(item, (str, Path)):
        return Path(item).name, read_frames(item)
    if isinstance(item, Frames):
        return Path(item.source.path).name or f"stack {index + 1}", item
    try:
        array, affine, source = volume_frames(item)
    except (TypeError, ValueError) as err:
        raise MedsrError(f"stack {index + 1}: {err}") from None
    return Path(source.path).name or f"stack {index + 1}", make_frames(array, affine, source)


def load_stacks(items: Sequence[Any]) -> list[Stack]:
    """Read and check the stacks (paths, :class:`Frames` or MetaTensors).

    Raises:
        MedsrError: fewer than two stacks, a 4D stack, a single slice, or NaN/Inf voxels.
    """
    if isinstance(items, (str, Path, Frames)) or len(items) < 2:
        count = 1 if isinstance(items, (str, Path, Frames)) else len(items)
        raise MedsrError(f"fuse needs two stacks or more, got {count} (one stack: use "
                         "medsr upscale)")
    stacks = []
    for i, item in enumerate(items):
        name, frames = _read(item, i)
        array = frames.array
        if array.shape[0] > 1:
            raise MedsrError(f"{name} is 4D ({array.shape[0]} volumes of "
                             f"{'×'.join(str(n) for n in array.shape[1:])}); fuse takes 3D "
                             "stacks: pick one volume (medsr upscale --volume) or split it")
        if min(array.shape[1:]) < 2:
            raise MedsrError(f"{name} is a single slice {tuple(array.shape[1:])}; fuse takes "
                             "stacks of slices")
        if not np.all(np.isfinite(array)):
            raise MedsrError(f"{name} has NaN/Inf voxels; replace them before fusing")
        stacks.append(Stack(name, array[0], np.asarray(frames.affine, np.float64), frames))
    return stacks


def _bspline_iso(stack: Stack) -> tuple[np.ndarray, np.ndarray]:
    """The stack's cubic B-spline on its own grid, thick axis subdivided to its finest
    spacing (what registration compares)."""
    from medsr.geometry import default_factors, resampled_affine
    from medsr.resample import upsample_axis

    out, affine = stack.array, stack.affine
    for axis, f in enumerate(default_factors(voxel_size(stack.affine))):
        if f > 1:
            out = upsample_axis(out, axis, f, "bspline")
            ratio = [1.0, 1.0, 1.0]
            ratio[axis] = 1.0 / f
            affine = resampled_affine(affine, ratio)
    return out, affine


def register_stacks(stacks: Sequence[Stack], reference: int = 0,
                    progress: Progress = None) -> None:
    """Register every stack to the reference (in place: ``registration``, and ``left_out``
    with the reason for a stack that does not register)."""
    ref = _bspline_iso(stacks[reference])
    others = [s for i, s in enumerate(stacks) if i != reference]
    for done, stack in enumerate(others):
        reg = register(_bspline_iso(stack), ref)
        stack.registration = reg
        centre = centre_of(stack.array.shape, stack.affine)
        logger.info("%s: registered to %s: rotation %.2f°, shift %.2f mm, correlation "
                    "%.3f -> %.3f", stack.name, stacks[reference].name, reg.degrees,
                    reg.shift_mm(centre), reg.correlation_before, reg.correlation)
        if reg.failure is not None:
            leave_out(stack, f"it does not register: {reg.failure}")
        if progress is not None:
            progress((done + 1) / len(others))


def leave_out(stack: Stack, reason: str) -> None:
    """Mark a stack left out, with the one line that says why."""
    stack.left_out = reason
    logger.warning("%s left out: %s", stack.name, reason)


def _on_grid(values: list[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: Grid
             ) -> np.ndarray:
    """The mean on the grid of ``(array, affine, transform)`` volumes (cubic B-spline), each
    voxel over the volumes that cover it (nearest-covered elsewhere: none -> 0)."""
    total = np.zeros(grid.shape, dtype=np.float32)
    count = np.zeros(grid.shape, dtype=np.float32)
    for array, affine, transform in values:
        v = resample_onto(array, affine, grid, transform, outside=math.nan)
        seen = np.isfinite(v)
        total[seen] += v[seen]
        count += seen
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def learned_prior(stacks: Sequence[Stack], grid: Grid, modality: str, device: str,
                  progress: Progress = None) -> tuple[np.ndarray, list[str]]:
    """The mean of the stacks' default-model SR outputs on the grid, and what ran on each."""
    outputs, methods = [], []
    for i, stack in enumerate(stacks):
        def step(p: float, i: int = i) -> None:
            progress((i + p) / len(stacks))

        array, affine = stack.cropped(grid, SR_MARGIN)
        sr = upscale_volume(make_frames(array, affine, stack.frames.source), method="auto",
                            modality=modality, device=device, noise_sd=stack.noise_sd,
                            progress=step if progress else None)
        methods.append(sr.meta.get("medsr_method", "?"))
        outputs.append((sr.array[0], sr.affine, stack.transform))
        logger.info("%s: upscaled alone by %s", stack.name, methods[-1])
    return _on_grid(outputs, grid), methods


def _consistency(stack: Stack, rms: float) -> dict:
    peak = float(stack.array.max() - stack.array.min()) or 1.0
    psnr = math.inf if rms == 0 else 20 * math.log10(peak / rms)
    return {"consistency_psnr": psnr, "residual_sd": rms,
            "residual_over_noise": rms / stack.noise_sd if stack.noise_sd > 0 else None}


def fuse(stacks: Sequence[Any], *, spacing: Sequence[float] | None = None,
         isotropic: float | None = None, extent: str = "common", reference: int = 0,
         prior: str = "learned", registration: bool = True, modality: str | None = None,
         device: str = "auto", smooth: float = SMOOTH, iterations: int = ITERATIONS,
         slice_thickness: Sequence[float | None] | None = None,
         progress: Progress = None) -> MetaTensor | Frames:
    """Fuse thick-slice stacks of one subject into one volume on an isotropic grid.

    Args:
        stacks: two or more stacks: paths (NIfTI, DICOM folder, NRRD, ...), MetaTensors or
            :class:`~medsr.io.Frames`, in any orientations and spacings.
        spacing: the grid's spacing in mm per axis; default ``isotropic``.
        isotropic: one spacing for every axis; default the finest in-plane spacing of the
            stacks.
        extent: ``"common"`` (what every stack covers) or ``"union"``.
        reference: index of the stack the others are registered to; the grid takes its
            orientation, and the output its header (format, dtype, DICOM attributes).
        prior: ``"learned"`` (the mean of each stack's default-model SR, as the start and as
            what the solve changes least) or ``"none"`` (a plain regularised solve from the
            mean of the stacks' B-splines).
        registration: register the stacks (else their headers are trusted).
        modality: ``"MR"`` or ``"CT"`` for the default models (default: the header, else
            guessed from the intensities).
        device: for the models (``auto``, ``cpu``, ``cuda``).
        smooth: weight of the regulariser (:mod:`medsr.fusion.solve`).
        iterations: the most conjugate-gradient steps.
        slice_thickness: per stack, the slice thickness in mm of its thick axis (``None``: the
            DICOM SliceThickness, else the spacing): its box profile's width.
        progress: called with the fraction done.

    Returns:
        The fused volume on the grid (a MetaTensor; :class:`~medsr.io.Frames` when every stack
        was given as Frames), with ``meta["medsr_fuse"]`` (see the module doc),
        ``meta["medsr_method"]`` and ``meta["medsr_consistency_psnr"]`` (the lowest over the
        stacks kept).

    Raises:
        MedsrError: one stack, a 4D stack, fields of view that do not overlap, fewer than two
            stacks left after registration, bad options.

    Example:
        >>> import medsr
        >>> vol = medsr.fuse(["ax.nii.gz", "cor.nii.gz", "sag.nii.gz"])   # doctest: +SKIP
        >>> medsr.save_volume(vol, "fused.nii.gz")                         # doctest: +SKIP
    """
    import torch

    from medsr.noise import noise_sd

    if prior not in PRIORS:
        raise MedsrError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
    if extent not in EXTENTS:
        raise MedsrError(f"unknown extent {extent!r}; choose one of {', '.join(EXTENTS)}")
    if isotropic is not None and spacing is not None:
        raise MedsrError("give either --spacing or --isotropic, not both")
    if not (isinstance(iterations, int) and iterations >= 0):
        raise MedsrError(f"iterations must be 0 or more, got {iterations!r}")
    if not smooth >= 0:
        raise MedsrError(f"the regulariser weight must be 0 or more, got {smooth}")
    plain = not isinstance(stacks, (str, Path)) and all(isinstance(s, Frames) for s in stacks)
    started = time.perf_counter()
    items = load_stacks(stacks)
    if not 0 <= reference < len(items):
        raise MedsrError(f"reference {reference} out of range: {len(items)} stacks")
    if slice_thickness is not None and len(slice_thickness) != len(items):
        raise MedsrError(f"{len(slice_thickness)} slice thicknesses for {len(items)} stacks")
    grid_spacing = isotropic if spacing is None else spacing
    names = [s.name for s in items]
    # the fields of view must overlap as the headers place them (different subjects do not)
    common_grid([s.array.shape for s in items], [s.affine for s in items],
                spacing=grid_spacing, extent="common", reference=reference, names=names)
    kind = (modality or items[reference].frames.source.modality or "").upper()
    if not kind:
        from medsr.transforms.intensity import guess_modality

        kind = guess_modality(items[reference].array)
    for i, stack in enumerate(items):
        stack.noise_sd = noise_sd(stack.array, stack.thick_axis)
        given = slice_thickness[i] if slice_thickness is not None else None
        header = stack.frames.source.extra.get("slice_thickness") \
            if stack.thick_axis == 2 else None  # DICOM SliceThickness
        mm = given or header
        d = float(voxel_size(stack.affine)[stack.thick_axis])
        stack.profile = SliceProfile("box", float(mm) / d if mm else 1.0)
        logger.info("%s: %s, noise sd %.3g", stack.name, stack.describe(), stack.noise_sd)
    share = {"register": 0.1 if registration else 0.0, "prior": 0.4 if prior == "learned"
             else 0.05}
    share["solve"] = 1.0 - share["register"] - share["prior"]

    def stage(offset: float, width: float) -> Progress:
        return None if progress is None else (lambda p: progress(offset + width * p))

    if registration:
        register_stacks(items, reference, stage(0.0, share["register"]))
    kept = [s for s in items if s.left_out is None]
    if len(kept) < 2:
        raise MedsrError("fewer than two stacks are left after registration: "
                         + "; ".join(f"{s.name}: {s.left_out}" for s in items if s.left_out))
    ref = items[reference]
    ref_index = kept.index(ref)
    grid = common_grid([s.array.shape for s in kept], [s.affine for s in kept],
                       spacing=grid_spacing, extent=extent, reference=ref_index,
                       transforms=[s.transform for s in kept], names=[s.name for s in kept])
    if extent == "common":
        grid = covered_part(grid, [s.array.shape for s in kept], [s.affine for s in kept],
                            [s.transform for s in kept], ref_index)
    logger.info("grid %s at %s mm (%s extent of %d stacks)", "×".join(map(str, grid.shape)),
                "×".join(f"{v:.3g}" for v in grid.spacing), extent, len(kept))
    offset = share["register"]
    if prior == "learned":
        prior_array, methods = learned_prior(kept, grid, kind, device,
                                             stage(offset, share["prior"]))
        for stack, method in zip(kept, methods):
            stack.summary["upscaled_by"] = method
    else:
        prior_array = _on_grid([(s.array, s.affine, s.transform) for s in kept], grid)
    offset += share["prior"]

    learned = prior == "learned"
    x, info, kept = fit(kept, grid, torch.from_numpy(prior_array), learned, smooth, iterations,
                        stage(offset, share["solve"]))
    for s, before, after in zip(kept, info.start_rms, info.residual_rms):
        s.summary.update(_consistency(s, after))
        s.summary["consistency_psnr_start"] = _consistency(s, before)["consistency_psnr"]
        noise = s.summary["residual_over_noise"]
        logger.info("%s: re-degraded fused volume vs stack %s (start %s)%s", s.name,
                    _db(s.summary["consistency_psnr"]), _db(s.summary["consistency_psnr_start"]),
                    f", residual {noise:.2f}× its noise sd {s.noise_sd:.3g}" if noise else "")
    logger.info("joint solve: %d iterations (%s)", info.iterations, info.stopped)
    out = x.numpy()
    result = make_frames(out, grid.affine, ref.frames.source)
    psnrs = [s.summary["consistency_psnr"] for s in kept]
    result.meta.update({
        "medsr_method": f"fuse {len(kept)} stacks, {'learned' if learned else 'no'} prior",
        "medsr_consistency_psnr": min(psnrs),
        "medsr_fuse": {
            "stacks": [_stack_record(s, s is ref) for s in items],
            "reference": ref.name, "prior": prior, "modality": kind, "extent": extent,
            "grid": {"shape": list(grid.shape), "spacing_mm": [round(float(v), 6)
                                                                for v in grid.spacing]},
            "solve": {"iterations": info.iterations, "stopped": info.stopped,
                      "smooth": smooth, "max_iterations": iterations},
            "seconds": round(time.perf_counter() - started, 2)}})
    if progress is not None:
        progress(1.0)
    return result if plain else as_metatensor(result, original_affine=ref.affine)


def _solve_kept(kept: Sequence[Stack], grid: Grid, start, learned: bool, smooth: float,
                iterations: int, progress: Progress) -> tuple:
    """The joint solve over ``kept``: ``(x, info, operators, stacks' voxels)``."""
    import torch

    from medsr.fusion.operators import StackOperator

    crops = [s.cropped(grid, 1) for s in kept]  # the grid is the kept stacks' own extent
    ops = [StackOperator(a.shape, affine, grid, s.transform, s.profile)
           for s, (a, affine) in zip(kept, crops)]
    ys = [torch.from_numpy(np.ascontiguousarray(a)) for a, _ in crops]
    x, info = solve(ops, ys, start=start, prior=start if learned else None,
                    noise_sd=[s.noise_sd for s in kept], smooth=smooth, iterations=iterations,
                    progress=progress)
    return x, info, ops, ys


def fit(kept: list[Stack], grid: Grid, start, learned: bool, smooth: float, iterations: int,
        progress: Progress = None) -> tuple:
    """The joint solve from ``start`` (the prior when ``learned``), and the stacks it kept.

    A stack whose residual is over :data:`SUSPECT` times its noise and the others' median
    residual is *suspect* (three stacks or more): the others are solved again without it, and
    when they predict it no better than :data:`OUTLIER` times its noise and their own new
    residual it disagrees with them beyond noise: it is left out, with one line, and the next
    suspect is tried; else the first solve stands. The others must have thick axes in two
    directions at least (:func:`_sharp_everywhere`): two coronal stacks are blurred along y
    together and would predict an axial one badly however well it agrees.
    """
    x, info, ops, ys = _solve_kept(kept, grid, start, learned, smooth, iterations, progress)
    while (i := _suspect(kept, info.residual_rms)) is not None:
        rest = [s for j, s in enumerate(kept) if j != i]
        if not _sharp_everywhere(rest):
            break  # the others share one thick direction: they cannot predict it sharply
        fit_rest = _solve_kept(rest, grid, start, learned, smooth, iterations, None)
        mask = ops[i].mask
        error = (ops[i].forward(fit_rest[0]) - ys[i])[mask]
        rms = float(error.double().pow(2).mean().sqrt()) if error.numel() else 0.0
        others = float(np.median(fit_rest[1].residual_rms))
        logger.debug("suspect %s: predicted %.3g, others %.3g", kept[i].name, rms, others)
        if rms <= OUTLIER * max(kept[i].noise_sd, others, 1e-12):
            break
        leave_out(kept[i], f"it disagrees with the others beyond noise: fused without it, "
                           f"they predict it with a residual of {rms:.3g} RMS, over "
                           f"{OUTLIER:g}× their own ({others:.3g}) and its noise sd "
                           f"({kept[i].noise_sd:.3g})")
        kept = rest
        x, info, ops, ys = fit_rest
    return x, info, kept


def _sharp_everywhere(stacks: Sequence[Stack]) -> bool:
    """Whether the stacks' thick axes (in the reference's world) point in two directions at
    least (more than :data:`PARALLEL_DEGREES` apart): then every direction is sharp in one."""
    dirs = []
    for s in stacks:
        axis = (s.transform[:3, :3] @ s.affine[:3, :3])[:, s.thick_axis]
        dirs.append(axis / np.linalg.norm(axis))
    limit = math.cos(math.radians(PARALLEL_DEGREES))
    return any(abs(float(a @ b)) < limit for i, a in enumerate(dirs) for b in dirs[i + 1:])


def _suspect(kept: Sequence[Stack], rms: Sequence[float]) -> int | None:
    """The stack whose residual is furthest over its noise and the others' median, when it
    is over :data:`SUSPECT` times that (three stacks or more)."""
    if len(kept) < 3:
        return None
    ratios = [rms[i] / max(s.noise_sd, float(np.median([r for j, r in enumerate(rms)
                                                           if j != i])), 1e-12)
              for i, s in enumerate(kept)]
    worst = int(np.argmax(ratios))
    return worst if ratios[worst] > SUSPECT else None


def _stack_record(stack: Stack, reference: bool) -> dict:
    record = {"name": stack.name, "shape": list(stack.array.shape),
              "profile_width": round(stack.profile.width, 6),
              "spacing_mm": [round(float(v), 6) for v in voxel_size(stack.affine)],
              "thick_axis": stack.thick_axis, "noise_sd": round(stack.noise_sd, 6),
              "left_out": stack.left_out}
    if stack.registration is not None:
        record["registration"] = stack.registration.as_dict(
            centre_of(stack.array.shape, stack.affine))
    else:  # the reference, or every stack where their headers are trusted
        record["registration"] = {"matrix_ras": np.eye(4).tolist(),
                                  "reference" if reference else "header": True}
    for key, value in stack.summary.items():
        record[key] = round(value, 4) if isinstance(value, float) and math.isfinite(value) \
            else value
    return record
