"""Compare a super-resolved volume with the truth (:func:`evaluate`) and benchmark methods.

:func:`evaluate` checks that both volumes lie on the same physical grid, clips them to the
data range of the modality (:func:`medsr.metrics.data_range`), and reports PSNR and SSIM per
slice along one axis, the volume PSNR and the MAE inside a (body) mask.
:func:`benchmark` degrades a high-resolution scan into thick slices, upscales it back with
each method through :func:`medsr.upscale`, and evaluates every result against the scan.
``medsr evaluate`` / ``medsr benchmark`` and ``notebooks/evaluate.ipynb`` call these.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medsr import metrics
from medsr.errors import MedsrError
from medsr.geometry import spacing
from medsr.io import load_volume, make_volume, volume_parts

logger = logging.getLogger(__name__)

#: Largest distance (mm) between corresponding grid corners for two grids to count as equal.
GRID_TOLERANCE_MM = 1e-3
RESAMPLE_METHODS = ("linear", "bspline")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class EvaluationResult:
    """Per-slice and summary metrics of one prediction (see :func:`evaluate`).

    Attributes:
        axis: slices are taken perpendicular to this array axis.
        axis_reason: why this axis was used.
        data_range: ``(lo, hi)`` both volumes were clipped to.
        range_reason: how the range was chosen.
        modality: ``"CT"``, ``"MR"`` or ``None``.
        slice_psnr: PSNR (dB) per slice; ``inf`` where the slice matches exactly.
        slice_ssim: mean SSIM per slice.
        excluded: slices left out of the means (constant GT, or an exact match).
        psnr: volume PSNR (dB) over every voxel.
        psnr_slice_mean: mean of ``slice_psnr`` over the slices not excluded.
        ssim: mean of ``slice_ssim`` over the slices not excluded.
        psnr_mask: volume PSNR over the mask.
        mae: mean absolute error inside the mask (HU for CT).
        mask_source: where the mask came from.
        mask_fraction: fraction of voxels in the mask.
        notes: anything else done to the inputs (e.g. resampling the truth).
    """

    axis: int
    axis_reason: str
    data_range: tuple[float, float]
    range_reason: str
    modality: str | None
    slice_psnr: list[float]
    slice_ssim: list[float]
    excluded: list[int]
    psnr: float
    psnr_slice_mean: float
    ssim: float
    psnr_mask: float
    mae: float
    mask_source: str
    mask_fraction: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.slice_psnr)

    @property
    def unit(self) -> str:
        """Intensity unit of ``mae``: ``"HU"`` for CT, else empty."""
        return "HU" if self.modality == "CT" else ""

    def summary(self) -> dict:
        """The summary as a JSON-ready dict (non-finite numbers become ``None``)."""
        return {"psnr": _finite(self.psnr), "psnr_slice_mean": _finite(self.psnr_slice_mean),
                "ssim": _finite(self.ssim), "mae": _finite(self.mae),
                "psnr_mask": _finite(self.psnr_mask), "axis": self.axis,
                "range": list(self.data_range), "n_slices": self.n_slices,
                "n_excluded": len(self.excluded), "modality": self.modality,
                "mask": self.mask_source, "mask_fraction": self.mask_fraction}

    def to_json(self, per_slice: bool = False) -> str:
        """One-line JSON of :meth:`summary` (with ``slices`` rows when ``per_slice``)."""
        out = self.summary()
        if per_slice:
            out["slices"] = self.rows()
        return json.dumps(out, allow_nan=False)

    def rows(self) -> list[dict]:
        """Per-slice rows: ``slice``, ``psnr``, ``ssim``, ``excluded``."""
        skip = set(self.excluded)
        return [{"slice": i, "psnr": _finite(p), "ssim": float(s), "excluded": i in skip}
                for i, (p, s) in enumerate(zip(self.slice_psnr, self.slice_ssim))]

    def write_csv(self, path: str | Path) -> Path:
        """Write the per-slice rows as CSV (``inf`` PSNR written as ``inf``)."""
        path = Path(path)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["slice", "psnr", "ssim", "excluded"])
            for i, (p, s) in enumerate(zip(self.slice_psnr, self.slice_ssim)):
                writer.writerow([i, f"{p:.6f}", f"{s:.6f}", int(i in self.excluded)])
        return path

    def report(self) -> str:
        """Human-readable multi-line report: choices made, per-slice table, summary."""
        lo, hi = self.data_range
        lines = [f"axis {self.axis}: {self.axis_reason}",
                 f"range [{lo:.6g}, {hi:.6g}] ({self.range_reason}); intensities clipped to it",
                 f"mask: {self.mask_source} ({100 * self.mask_fraction:.1f}% of voxels)",
                 *self.notes, "slice   psnr_dB    ssim"]
        for row in self.rows():
            flag = "  (excluded)" if row["excluded"] else ""
            p = "inf" if row["psnr"] is None else f"{row['psnr']:.3f}"
            lines.append(f"{row['slice']:5d} {p:>9} {row['ssim']:7.4f}{flag}")
        if self.excluded:
            lines.append(f"{len(self.excluded)} of {self.n_slices} slices excluded from the "
                         "means (GT constant on the slice, or PSNR infinite)")
        unit = f" {self.unit}" if self.unit else ""
        lines.append(f"PSNR {self.psnr:.3f} dB (volume), {self.psnr_slice_mean:.3f} dB "
                     f"(mean of slices); SSIM {self.ssim:.4f} (mean of slices); "
                     f"MAE {self.mae:.4g}{unit} in mask (PSNR in mask {self.psnr_mask:.3f} dB)")
        return "\n".join(lines)


def _as_volume(volume, what: str) -> MetaTensor:
    if isinstance(volume, MetaTensor):
        return volume
    if isinstance(volume, (str, Path)):
        return load_volume(volume)
    raise MedsrError(f"{what} must be a path or a MetaTensor with an affine")


def grid_difference(shape_a, affine_a, shape_b, affine_b) -> float | None:
    """Largest distance (mm) between the 8 corner voxel centres of two grids; None if the
    shapes differ."""
    if tuple(shape_a) != tuple(shape_b):
        return None
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_a[0] - 1)
                        for j in (0, shape_a[1] - 1) for k in (0, shape_a[2] - 1)]).T
    diff = (np.asarray(affine_a) @ corners - np.asarray(affine_b) @ corners)[:3]
    return float(np.linalg.norm(diff, axis=0).max())


def resample_to_grid(array: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray,
                     method: str = "linear") -> np.ndarray:
    """Resample an ``(X, Y, Z)`` array onto another grid in world space (SimpleITK).

    ``method`` is ``"linear"``, ``"bspline"`` (cubic) or ``"nearest"``. Target voxels outside
    the source extent are NaN.
    """
    import SimpleITK as sitk

    from medsr.io.itk import image_from_array

    interpolators = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline,
                     "nearest": sitk.sitkNearestNeighbor}
    if method not in interpolators:
        raise MedsrError(f"unknown resampling method {method!r}; choose one of "
                         f"{', '.join(RESAMPLE_METHODS)}")
    source = image_from_array(np.asarray(array, dtype=np.float32), affine)
    reference = image_from_array(np.zeros(tuple(shape), dtype=np.float32), target_affine)
    out = sitk.Resample(source, reference, sitk.Transform(), interpolators[method],
                        float("nan"), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def choose_axis(pred: MetaTensor, axis: int | None) -> tuple[int, str]:
    """The slice axis: ``axis`` if given, else the axis whose spacing changed most between
    PRED's ``original_affine`` and ``affine`` (the upscaled axis), else the last axis."""
    if axis is not None:
        if axis not in (0, 1, 2):
            raise MedsrError(f"--axis must be 0, 1 or 2, got {axis}")
        return axis, "given"
    original = pred.meta.get("original_affine")
    if original is not None:
        before = spacing(np.asarray(original, dtype=np.float64))
        after = spacing(np.asarray(pred.affine, dtype=np.float64))
        change = np.abs(np.log(after / before))
        if change.max() > 1e-6:
            k = int(np.argmax(change))
            return k, (f"the upscaled axis (spacing {before[k]:.4g} -> {after[k]:.4g} mm "
                       "from PRED's original_affine)")
    return 2, "the last (slice) axis; PRED records no upscaling (pass --axis to choose)"


def _mask_array(mask, pred_shape, pred_affine, gt_grid, resampled: bool) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        if mask.shape != tuple(pred_shape):
            raise MedsrError(f"mask shape {mask.shape} differs from PRED {tuple(pred_shape)}")
        return mask.astype(bool)
    vol = _as_volume(mask, "mask")
    array, affine, _ = volume_parts(vol)
    diff = grid_difference(array.shape, affine, pred_shape, pred_affine)
    if diff is not None and diff <= GRID_TOLERANCE_MM:
        return array > 0.5
    if resampled:
        diff = grid_difference(array.shape, affine, *gt_grid)
        if diff is not None and diff <= GRID_TOLERANCE_MM:
            out = resample_to_grid(array, affine, pred_shape, pred_affine, "nearest")
            return np.nan_to_num(out) > 0.5
    raise MedsrError("the mask is not on PRED's grid" + (" nor GT's" if resampled else ""))


def evaluate(pred: str | Path | MetaTensor, gt: str | Path | MetaTensor, *,
             mask: str | Path | MetaTensor | np.ndarray | None = None,
             data_range: tuple[float, float] | None = None,
             axis: int | None = None, resample_gt: bool | str = False) -> EvaluationResult:
    """Compare a prediction with the ground truth on the same grid.

    Args:
        pred: the super-resolved volume (path or MetaTensor).
        gt: the truth (path or MetaTensor).
        mask: a volume (path or MetaTensor; nonzero inside) on PRED's grid, or a boolean array
            of PRED's shape, for MAE and masked PSNR. Default: :func:`medsr.metrics.body_mask`
            of GT.
        data_range: ``(lo, hi)`` to clip to; default :func:`medsr.metrics.data_range`.
        axis: slice axis; default :func:`choose_axis`.
        resample_gt: resample GT onto PRED's grid when the grids differ: ``True`` or
            ``"linear"`` for linear, ``"bspline"`` for cubic B-spline (SimpleITK).

    Raises:
        MedsrError: different grids without ``resample_gt``, NaN/Inf voxels, bad options.
    """
    pred_vol, gt_vol = _as_volume(pred, "PRED"), _as_volume(gt, "GT")
    p, p_affine, p_src = volume_parts(pred_vol)
    g, g_affine, g_src = volume_parts(gt_vol)
    gt_grid = (g.shape, g_affine)
    for name, a in (("PRED", p), ("GT", g)):
        if not np.all(np.isfinite(a)):
            raise MedsrError(f"{name} has NaN/Inf voxels")
    notes = []
    diff = grid_difference(p.shape, p_affine, g.shape, g_affine)
    same = diff is not None and diff <= GRID_TOLERANCE_MM
    if not same:
        where = (f"shapes {p.shape} vs {g.shape}" if diff is None
                 else f"grid corners differ by up to {diff:.4g} mm")
        if not resample_gt:
            raise MedsrError(f"PRED and GT are not on the same grid ({where}); pass "
                             "--resample-gt to resample GT onto PRED's grid")
        method = "linear" if resample_gt is True else str(resample_gt)
        g = resample_to_grid(g, g_affine, p.shape, p_affine, method)
        outside = int(np.count_nonzero(np.isnan(g)))
        if outside:
            raise MedsrError(f"{outside} voxels of PRED's grid lie outside GT's extent; "
                             "GT cannot be resampled onto it")
        notes.append(f"GT resampled onto PRED's grid ({method}, SimpleITK): {where}")
    elif resample_gt:
        notes.append("GT already lies on PRED's grid: not resampled")
    modality = g_src.modality or p_src.modality
    axis, axis_reason = choose_axis(pred_vol, axis)
    if data_range is not None:
        lo, hi = (float(v) for v in data_range)
        range_reason = "given"
    else:
        lo, hi, range_reason = metrics.data_range(g, modality)
    if not hi > lo:
        raise MedsrError(f"empty data range [{lo:.6g}, {hi:.6g}] (constant GT?); "
                         "pass --range LO HI")
    p, g = np.clip(p, lo, hi), np.clip(g, lo, hi)
    if mask is None:
        # holes are filled in slices across the largest spacing (the last axis on ties)
        fill_axis = 2 - int(np.argmax(spacing(p_affine if not same else g_affine)[::-1]))
        mask_arr, mask_source = metrics.body_mask(g, modality, fill_axis=fill_axis)
        mask_source = f"automatic body mask ({mask_source})"
    else:
        mask_arr = _mask_array(mask, p.shape, p_affine, gt_grid, not same)
        mask_source = "given"
    if not mask_arr.any():
        raise MedsrError("the mask is empty")
    width = hi - lo
    slice_psnr = metrics.psnr_per_slice(p, g, axis, width)
    slice_ssim = metrics.ssim_per_slice(p, g, axis, width)
    g_slices = metrics.slices(g, axis)
    constant = g_slices.max(axis=(1, 2)) == g_slices.min(axis=(1, 2))
    excluded = [int(i) for i in np.flatnonzero(constant | ~np.isfinite(slice_psnr))]
    keep = np.setdiff1d(np.arange(len(slice_psnr)), excluded)

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[keep])) if keep.size else float("nan")

    result = EvaluationResult(
        axis=axis, axis_reason=axis_reason, data_range=(lo, hi), range_reason=range_reason,
        modality=modality, slice_psnr=[float(v) for v in slice_psnr],
        slice_ssim=[float(v) for v in slice_ssim], excluded=excluded,
        psnr=metrics.psnr(p, g, width), psnr_slice_mean=mean(slice_psnr),
        ssim=mean(slice_ssim), psnr_mask=metrics.psnr(p, g, width, mask_arr),
        mae=metrics.mae(p, g, mask_arr), mask_source=mask_source,
        mask_fraction=float(mask_arr.mean()), notes=notes)
    logger.info("evaluated along axis %d: PSNR %.3f dB, SSIM %.4f", axis, result.psnr,
                result.ssim)
    return result


@dataclass
class BenchmarkResult:
    """Results of :func:`benchmark`.

    Attributes:
        axis, factor, profile: the degradation.
        shape: the (cropped) HR shape every method was evaluated on.
        cropped: HR voxels dropped at the end of ``axis`` to make its length a multiple of
            ``factor``.
        results: method name -> :class:`EvaluationResult`.
        files: ``"per_slice_csv"``, ``"summary_csv"``, ``"curves"``, ``"slices"`` -> path
            (empty when nothing was written).
    """

    axis: int
    factor: int
    profile: str
    shape: tuple[int, int, int]
    cropped: int
    results: dict[str, EvaluationResult]
    files: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One summary row per method."""
        return [{"method": name, **res.summary(), "factor": self.factor,
                 "profile": self.profile} for name, res in self.results.items()]

    def slice_rows(self) -> list[dict]:
        """Per-slice rows: ``method``, ``slice``, ``psnr``, ``ssim``, ``excluded``."""
        return [{"method": name, **row} for name, res in self.results.items()
                for row in res.rows()]

    def table(self) -> str:
        """The summary as a Markdown table (prints as plain text too)."""
        unit = next(iter(self.results.values())).unit if self.results else ""
        mae = f"MAE ({unit})" if unit else "MAE"
        lines = [f"| method | PSNR (dB) | slice-mean PSNR (dB) | SSIM | {mae} |",
                 "| --- | --- | --- | --- | --- |"]
        for name, r in self.results.items():
            lines.append(f"| {name} | {r.psnr:.3f} | {r.psnr_slice_mean:.3f} | {r.ssim:.4f} | "
                         f"{r.mae:.4g} |")
        return "\n".join(lines)

    def write_csv(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``per_slice.csv`` (method, slice, psnr, ssim, excluded) and ``summary.csv``."""
        folder = Path(folder)
        per_slice, summary = folder / "per_slice.csv", folder / "summary.csv"
        with open(per_slice, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "slice", "psnr", "ssim", "excluded"])
            for name, res in self.results.items():
                for i, (p, s) in enumerate(zip(res.slice_psnr, res.slice_ssim)):
                    writer.writerow([name, i, f"{p:.6f}", f"{s:.6f}", int(i in res.excluded)])
        keys = ["method", "psnr", "psnr_slice_mean", "ssim", "mae", "psnr_mask", "axis",
                "factor", "profile", "n_slices", "n_excluded", "range", "modality"]
        with open(summary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows():
                writer.writerow({**row, "range": " ".join(f"{v:.6g}" for v in row["range"])})
        return per_slice, summary


def default_benchmark_dir(path: str | Path) -> Path:
    """``scan.nii.gz -> scan_benchmark/`` beside the scan."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return path.parent / f"{name}_benchmark"


def benchmark(hr: str | Path | MetaTensor, factor: int, *, axis: int | None = None,
              methods: tuple[str, ...] | list[str] = ("linear", "bspline"),
              profile: str = "box", out_dir: str | Path | None = None, force: bool = False,
              data_range: tuple[float, float] | None = None,
              options: dict[str, dict] | None = None) -> BenchmarkResult:
    """Degrade a thin-slice scan, upscale it back with each method, evaluate against the scan.

    The HR scan is cropped to ``floor(n/f)*f`` voxels along ``axis``;
    :func:`medsr.transforms.degrade.simulate_thick_slices` makes the thick-slice copy;
    :func:`medsr.upscale` brings it back ×``factor`` with each method (exactly onto the cropped
    HR grid, which is checked) and :func:`evaluate` compares along ``axis``.

    Args:
        hr: the thin-slice scan (path or MetaTensor).
        factor: slice thickness and spacing of the LR copy, in HR voxels (integer >= 2).
        axis: the degraded array axis; default the last one (2).
        methods: names passed to :func:`medsr.upscale`.
        profile: slice profile, ``"box"`` (slab average) or ``"gaussian"``.
        out_dir: folder for the CSVs and PNGs; default ``NAME_benchmark/`` beside a scan
            given as a path; nothing is written for a MetaTensor without ``out_dir``.
        force: write into an existing ``out_dir``.
        data_range: clipping range; default :func:`medsr.metrics.data_range` of the HR scan.
        options: method name -> extra keyword arguments of :func:`medsr.upscale` (e.g.
            ``{"self-supervised": {"self_supervised": {"budget_seconds": 60}}}``).

    Raises:
        MedsrError: bad factor, axis, profile or method (one-line message), existing output.
    """
    import medsr
    from medsr.transforms.degrade import PROFILES, simulate_thick_slices

    if isinstance(factor, bool) or not float(factor).is_integer() or factor < 2:
        raise MedsrError(f"--factor must be an integer >= 2, got {factor}")
    factor = int(factor)
    axis = 2 if axis is None else axis
    if axis not in (0, 1, 2):
        raise MedsrError(f"--axis must be 0, 1 or 2, got {axis}")
    if profile not in PROFILES:
        raise MedsrError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    methods = [m.strip() for m in methods if m.strip()]
    if not methods or len(set(methods)) != len(methods):
        raise MedsrError("give one or more distinct methods, e.g. linear,bspline")
    if out_dir is None and isinstance(hr, (str, Path)):
        out_dir = default_benchmark_dir(hr)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not force:
            raise MedsrError(f"{out_dir} exists; pass --force to write into it")
        if out_dir.exists() and not out_dir.is_dir():
            raise MedsrError(f"{out_dir} is not a folder")
    volume = _as_volume(hr, "HR_SCAN")
    array, affine, source = volume_parts(volume)
    n = array.shape[axis]
    keep = n // factor * factor
    if keep // factor < 2:
        raise MedsrError(f"axis {axis} has {n} voxels: too few for factor {factor} "
                         "(the low-resolution copy needs at least 2 slices)")
    truth = make_volume(np.take(array, np.arange(keep), axis=axis), affine, source)
    low = simulate_thick_slices(truth, axis, factor, profile=profile)
    scale = [1, 1, 1]
    scale[axis] = factor
    results, preds = {}, {}
    for name in methods:
        logger.info("benchmark: upscaling with %s", name)
        pred = medsr.upscale(low, scale, method=name, **(options or {}).get(name, {}))
        diff = grid_difference(tuple(pred.shape[1:]), np.asarray(pred.affine),
                               truth.shape[1:], affine)
        if diff is None or diff > GRID_TOLERANCE_MM:
            raise MedsrError(f"method {name!r} did not return the HR grid "
                             f"({tuple(pred.shape[1:])} vs {tuple(truth.shape[1:])})")
        results[name] = evaluate(pred, truth, axis=axis, data_range=data_range)
        preds[name] = volume_parts(pred)[0]
    result = BenchmarkResult(axis=axis, factor=factor, profile=profile,
                             shape=tuple(int(s) for s in truth.shape[1:]), cropped=n - keep,
                             results=results)
    if out_dir is not None:
        from medsr.figures import plot_curves, plot_slices

        out_dir.mkdir(parents=True, exist_ok=True)
        per_slice, summary = result.write_csv(out_dir)
        title = f"{Path(source.path).name or 'volume'}: axis {axis}, ×{factor} ({profile})"
        t = volume_parts(truth)[0]
        low_on_grid = np.repeat(volume_parts(low)[0], factor, axis=axis)
        window = next(iter(results.values())).data_range

        def clip(a: np.ndarray) -> np.ndarray:
            return np.clip(a, *window)

        result.files = {
            "per_slice_csv": per_slice, "summary_csv": summary,
            "curves": plot_curves(results, out_dir / "curves.png", title, factor),
            "slices": plot_slices(clip(t), clip(low_on_grid),
                                  {k: clip(v) for k, v in preds.items()}, spacing(affine),
                                  axis, window, out_dir / "slices.png", title)}
    return result
