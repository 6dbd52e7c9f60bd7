"""``medsr fuse`` on held-out thin-slice scans made into three orthogonal thick stacks.

Quality (``quality``): a thin-slice scan (the truth) is box-averaged into an axial, a coronal
and a sagittal stack, each ×F thicker across its own axis; the coronal and sagittal stacks are
taken with the subject moved by a few degrees and millimetres (the thin slices are sampled at
the moved points, cubic B-spline, before averaging), the axial one is not (it is the
reference). Compared with the truth on the fused grid (PSNR over every voxel, data range 0 to
the truth's 99.5th percentile; SSIM the mean over the slices along all three axes):

* ``fused (learned prior)`` and ``fused (plain solve)``: ``medsr.fuse`` with ``prior="learned"``
  and ``prior="none"``;
* ``<stack> default model``: each stack upscaled alone by the default model
  (``medsr.upscale(method="default")``), then carried onto the grid through the transform that
  registration found (cubic B-spline);
* ``<stack> B-spline``: each stack carried onto the grid by a cubic B-spline, through the same
  transform.

Timing (``timing``): three 256×256×40 stacks (1×1×4 mm, the scan zero-padded to 256 mm)
fused to 1 mm by one ``medsr fuse`` process per prior, whole process timed, its peak RSS
(``getrusage`` in the process); beside them, in the same minutes, ``medsr upscale`` of the
axial stack alone by the default model.

Leave one stack out (``loso``): a real multi-stack scan has no truth, but each stack is a
measurement the others can predict. Every stack is registered to the first (as ``medsr fuse``
does); for each stack ``k`` that registers, the others are fused (``medsr.fuse``, which
registers them again, to the first of them), and stack ``k`` is predicted by its own operator
(:class:`medsr.fusion.operators.StackOperator`, its slice profile, through its registration)
applied to the fused volume, and likewise to each other registered stack alone, upscaled by
the default model or by B-spline and carried onto the fused grid. Scored against stack ``k``
over its voxels that every prediction covers (PSNR, data range 0 to the whole stack ``k``'s
99.5th percentile; SSIM the mean of the 2D SSIM map over them), and inside its mask among them
(``--masks``). With masks, the same again with every stack cut to its mask's box and
``--margin`` mm around it (mode ``cropped``: registration and fusion then see the brain
only).

Spread (``spread``): could the fused volume carry a calibrated uncertainty map? The spread of
the stacks' own default-model outputs on the grid, fitted against the truth on one half of
the head as :mod:`medsr.uncertainty` fits its sd, tested on the other half.

Usage::

    scripts/get_data.sh data      # data/holdout/colin27_t1.nii.gz (Colin27, apt mricron-data)
    python benchmarks/fuse_eval.py quality data/holdout/colin27_t1.nii.gz --out docs/fuse
    python benchmarks/fuse_eval.py timing data/holdout/colin27_t1.nii.gz --out docs/fuse
    # a second scan: fetch github:datalad/example-dicom-structural, then its dicoms/ folder
    python benchmarks/fuse_eval.py prepare dicoms/ --out philips_t1_1mm.nii.gz
    python benchmarks/fuse_eval.py quality philips_t1_1mm.nii.gz --out docs/fuse
    python benchmarks/fuse_eval.py spread data/holdout/colin27_t1.nii.gz --out docs/fuse
    # MIALSRTK's fetal sample (github Medical-Image-Analysis-Laboratory/
    # mialsuperresolutiontoolkit, data/sub-01/anat and data/derivatives/manual_masks)
    python benchmarks/fuse_eval.py loso run-{1..6}.nii.gz --masks mask-{1..6}.nii.gz \
        --slice-thickness 3 --out docs/fuse --name fetal_loso
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medsr import metrics
from medsr.fusion.grid import Grid, centre_of, resample_onto
from medsr.fusion.simulate import rigid, thick_stack
from medsr.io import SourceInfo, make_frames, read_frames, save_volume

#: the stacks: (name, thick axis, rotation degrees about x, y, z, shift mm)
STACKS = (("axial", 2, None, None),
          ("coronal", 1, (3.0, -2.0, 1.5), (1.5, -2.0, 1.0)),
          ("sagittal", 0, (-2.0, 2.5, -3.0), (-2.0, 1.0, 2.5)))


def load_truth(path: Path, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The scan, cut to a whole number of thick slices along every axis."""
    frames = read_frames(path)
    v = frames.array[0]
    n = [s - s % factor for s in v.shape]
    return np.ascontiguousarray(v[:n[0], :n[1], :n[2]]), frames.affine


def make_stacks(truth: np.ndarray, affine: np.ndarray, factor: int, folder: Path
                ) -> tuple[list[Path], list[np.ndarray]]:
    centre = centre_of(truth.shape, affine)
    paths, motions = [], []
    for name, axis, degrees, mm in STACKS:
        motion = None if degrees is None else rigid(degrees, mm, centre)
        lr, lr_affine = thick_stack(truth, affine, axis, factor, motion)
        path = folder / f"{name}.nii.gz"
        save_volume(make_frames(lr, lr_affine, SourceInfo("nifti", "", "float32", "MR")), path,
                    force=True)
        paths.append(path)
        motions.append(np.eye(4) if motion is None else motion)
    return paths, motions


def on_grid(truth: np.ndarray, truth_affine: np.ndarray, grid: Grid) -> np.ndarray:
    """The truth's voxels on the fused grid (which lies on its lattice)."""
    offset = np.linalg.solve(truth_affine, grid.affine)
    assert np.allclose(offset[:3, :3], np.eye(3), atol=1e-6), "grid off the truth's lattice"
    o = np.round(offset[:3, 3]).astype(int)
    assert np.allclose(offset[:3, 3], o, atol=1e-4), offset[:3, 3]
    n = grid.shape
    return truth[o[0]:o[0] + n[0], o[1]:o[1] + n[1], o[2]:o[2] + n[2]]


def score(pred: np.ndarray, truth: np.ndarray, hi: float, covered: np.ndarray) -> dict:
    """PSNR and SSIM over the whole grid, and PSNR over the voxels every stack covers (a
    moved stack leaves corners of the grid empty, which its own rows count as errors)."""
    p, t = np.clip(pred, 0, hi), np.clip(truth, 0, hi)
    ssim = float(np.mean([np.mean(metrics.ssim_per_slice(p, t, axis, hi)) for axis in range(3)]))
    return {"psnr": round(metrics.psnr(p, t, hi), 3), "ssim": round(ssim, 4),
            "psnr_covered": round(metrics.psnr(p, t, hi, covered), 3)}


def motion_error(found: np.ndarray, true: np.ndarray, centre: np.ndarray) -> dict:
    err = np.linalg.inv(true) @ found
    degrees = np.degrees(np.arccos(np.clip((np.trace(err[:3, :3]) - 1) / 2, -1, 1)))
    return {"rotation_error_deg": round(float(degrees), 3),
            "shift_error_mm": round(float(np.linalg.norm(err[:3, :3] @ centre + err[:3, 3]
                                                         - centre)), 3)}


def quality(args: argparse.Namespace) -> None:
    import torch

    import medsr
    from medsr.upscaling import upscale_volume

    torch.set_num_threads(args.threads)
    truth, affine = load_truth(args.scan, args.factor)
    hi = float(np.percentile(truth, metrics.MR_PERCENTILE))
    rows, images = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        paths, motions = make_stacks(truth, affine, args.factor, Path(tmp))
        fused = {}
        for prior in ("learned", "none"):
            start = time.perf_counter()
            fused[prior] = medsr.fuse(paths, prior=prior)
            fused[prior].meta["seconds"] = time.perf_counter() - start
        out = fused["learned"]
        grid = Grid(tuple(out.shape[1:]), np.asarray(out.affine, dtype=np.float64))
        gt = on_grid(truth, affine, grid)
        record = out.meta["medsr_fuse"]
        centre = centre_of(truth.shape, affine)
        covered = np.ones(grid.shape, dtype=bool)
        for path, stack in zip(paths, record["stacks"]):
            frames = read_frames(path)
            covered &= np.isfinite(resample_onto(
                np.ones(frames.array.shape[1:], np.float32), frames.affine, grid,
                np.asarray(stack["registration"]["matrix_ras"]), "nearest", np.nan))
        for prior, label in (("learned", "fused (learned prior)"), ("none",
                                                                     "fused (plain solve)")):
            x = np.asarray(fused[prior][0])
            images[label] = x
            rows.append({"method": label, **score(x, gt, hi, covered),
                         "seconds": round(fused[prior].meta["seconds"], 1),
                         "stacks": [{k: s.get(k) for k in ("name", "consistency_psnr",
                                                           "residual_over_noise")}
                                    for s in fused[prior].meta["medsr_fuse"]["stacks"]]})
        for (name, *_), path, motion, stack in zip(STACKS, paths, motions, record["stacks"]):
            transform = np.asarray(stack["registration"]["matrix_ras"])
            frames = read_frames(path)
            sr = upscale_volume(frames, method="default")
            single = {
                f"{name} default model": resample_onto(sr.array[0], sr.affine, grid, transform),
                f"{name} B-spline": resample_onto(frames.array[0], frames.affine, grid,
                                                  transform)}
            for label, x in single.items():
                images[label] = x
                rows.append({"method": label, **score(x, gt, hi, covered),
                             **motion_error(transform, motion, centre)})
    best = {kind: max((r for r in rows if r["method"].endswith(kind)), key=lambda r: r["psnr"])
            for kind in ("default model", "B-spline")}
    summary = {"scan": args.scan.name, "factor": args.factor, "shape": list(truth.shape),
               "covered_share": round(float(covered.mean()), 4),
               "grid": record["grid"], "registration": [s["registration"]
                                                        for s in record["stacks"]],
               "rows": rows, "best_single_sr": best["default model"]["method"],
               "best_bspline": best["B-spline"]["method"]}
    for r in rows:
        r["gain_over_best_sr_db"] = round(r["psnr"] - best["default model"]["psnr"], 2)
        r["gain_over_best_bspline_db"] = round(r["psnr"] - best["B-spline"]["psnr"], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.scan.name.split(".")[0]
    (args.out / f"{stem}_x{args.factor}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'method':<26} {'PSNR':>7} {'SSIM':>7} {'covered':>7} {'vs SR':>6} {'vs B-sp':>7}")
    for r in rows:
        print(f"{r['method']:<26} {r['psnr']:>7.2f} {r['ssim']:>7.4f} {r['psnr_covered']:>7.2f} "
              f"{r['gain_over_best_sr_db']:>+6.2f} {r['gain_over_best_bspline_db']:>+7.2f}")
    figure(images, gt, hi, [best["B-spline"]["method"], best["default model"]["method"],
                            "fused (plain solve)", "fused (learned prior)"],
           args.out / f"{stem}_x{args.factor}.png", args.factor)


def figure(images: dict, gt: np.ndarray, hi: float, shown: list[str], path: Path,
           factor: int) -> None:
    """Coronal and sagittal planes through the centre (the axial reference is blurred
    there), each method and its error."""
    from matplotlib.figure import Figure

    columns = ["truth", *shown]
    planes = (("coronal", 1), ("sagittal", 0))
    fig = Figure(figsize=(2.3 * len(columns), 2.5 * 2 * len(planes)), dpi=110,
                 layout="constrained")
    axes = fig.subplots(2 * len(planes), len(columns))
    for p, (plane, axis) in enumerate(planes):
        k = gt.shape[axis] // 2
        for c, name in enumerate(columns):
            vol = gt if name == "truth" else images[name]
            img = np.take(vol, k, axis=axis).T[::-1]
            err = np.abs(np.take(vol - gt, k, axis=axis).T[::-1])
            top, bottom = axes[2 * p, c], axes[2 * p + 1, c]
            top.imshow(np.clip(img, 0, hi), cmap="gray", vmin=0, vmax=hi)
            bottom.imshow(err, cmap="inferno", vmin=0, vmax=0.25 * hi)
            title = name if name == "truth" else name.replace(" (", "\n(")
            top.set_title(f"{title}" if p == 0 else "", fontsize=8)
            if name != "truth":
                score_text = f"{metrics.psnr(np.clip(vol, 0, hi), np.clip(gt, 0, hi), hi):.2f} dB"
                top.text(2, 10, score_text, color="yellow", fontsize=7)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if c == 0:
                top.set_ylabel(plane, fontsize=8)
                bottom.set_ylabel(f"{plane} |error|", fontsize=8)
    fig.suptitle(f"Three ×{factor} stacks (coronal and sagittal moved), fused; error scale 0 "
                 "to 25 % of the range", fontsize=9)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)  # a third the bytes
    print(f"figure -> {path}")


#: one medsr process that reports its own peak RSS (KiB) on its last stderr line
PEAK = ("import resource, sys\nfrom medsr.cli import main\nsys.argv = sys.argv[1:]\n"
        "try:\n    main()\nfinally:\n    print('peak_rss_kib', resource.getrusage("
        "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")


def timing(args: argparse.Namespace) -> None:
    """Three 256²×40 stacks (1×1×4 mm) -> 1 mm isotropic, one process per prior."""
    truth, affine = load_truth(args.scan, 4)
    big = np.zeros((256, 256, 256), dtype=np.float32)
    o = [(256 - s) // 2 for s in truth.shape]
    big[o[0]:o[0] + truth.shape[0], o[1]:o[1] + truth.shape[1],
        o[2]:o[2] + truth.shape[2]] = truth
    t = np.eye(4)
    t[:3, 3] = [-v for v in o]
    big_affine = affine @ t
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        centre = centre_of(big.shape, big_affine)
        paths = []
        for name, axis, degrees, mm in STACKS:
            motion = None if degrees is None else rigid(degrees, mm, centre)
            lr, lr_affine = thick_stack(big, big_affine, axis, 4, motion)
            keep = [slice(None)] * 3
            keep[axis] = slice(12, 52)  # 40 slices of 4 mm through the middle
            t = np.eye(4)
            t[axis, 3] = 12
            paths.append(folder / f"{name}.nii.gz")
            save_volume(make_frames(lr[tuple(keep)], lr_affine @ t,
                                    SourceInfo("nifti", "", "float32", "MR")), paths[-1],
                        force=True)
        runs = [(f"fuse --prior {prior}", ["fuse", *map(str, paths), "-o",
                                            str(folder / f"fused_{prior}.nii.gz"),
                                            "--prior", prior, "--force"])
                for prior in args.priors.split(",")]
        # the reference, in the same minutes: one stack upscaled alone by the default model
        runs.append(("upscale axial (default model)",
                     ["upscale", str(paths[0]), "-o", str(folder / "axial_sr.nii.gz"),
                      "--method", "default", "--force"]))
        for label, command in runs:
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PEAK, "medsr", *command],
                                  capture_output=True, text=True, env=env, check=False)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            peak = int(done.stderr.strip().splitlines()[-1].split()[-1])
            row = {"run": label, "stacks": "3 × 256×256×40 at 1×1×4 mm",
                   "output": done.stdout.strip().splitlines()[-1].split(" (")[0][-60:],
                   "seconds": round(seconds, 1), "peak_rss_gib": round(peak / 2**20, 2),
                   "load": round(os.getloadavg()[0], 2), "threads": args.threads}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timing.json").write_text(json.dumps(rows, indent=2) + "\n")


def prepare(args: argparse.Namespace) -> None:
    """A thin-slice scan (e.g. the Philips 3T T1 DICOM series of
    datalad/example-dicom-structural, 0.7×0.67×0.67 mm) as a 1 mm truth: a 0.35 mm Gaussian
    against aliasing, cubic B-spline onto 1 mm in its own orientation (the same extent), cut
    to the head (voxels above 5 % of the 99.5th percentile, 4 voxels around)."""
    import SimpleITK as sitk

    from medsr.io.itk import affine_from_image, image_from_array

    frames = read_frames(args.scan)
    image = image_from_array(frames.array[0], frames.affine)
    smooth = sitk.SmoothingRecursiveGaussian(image, [0.35] * 3)
    spacing, size = np.array(image.GetSpacing()), np.array(image.GetSize())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ ((1.0 - spacing) / 2)
    out = sitk.Resample(smooth, [int(v) for v in np.floor(size * spacing)], sitk.Transform(),
                        sitk.sitkBSpline, origin.tolist(), [1.0] * 3, image.GetDirection(),
                        0.0, sitk.sitkFloat32)
    array = np.clip(sitk.GetArrayFromImage(out).transpose(2, 1, 0), 0, None)
    head = array > 0.05 * np.percentile(array, 99.5)
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(head.any(axis=tuple(b for b in range(3) if b != axis)))
        lo.append(max(0, int(hit[0]) - 4))
        hi.append(min(array.shape[axis], int(hit[-1]) + 5))
    shift = np.eye(4)
    shift[:3, 3] = lo
    save_volume(make_frames(array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                            affine_from_image(out) @ shift,
                            SourceInfo("nifti", "", "float32", "MR")), args.out, force=True)
    print(f"{args.scan} -> {args.out}")


# could the fused volume carry a calibrated uncertainty? ----------------------------------------
def spread_check(args: argparse.Namespace) -> None:
    """The three stacks of ``quality``, fused with the learned prior; the spread (sd) of the
    stacks' own default-model outputs on the grid, and the fused volume's change from their
    mean, as :mod:`medsr.uncertainty` models an sd; fitted **against the truth** on one half
    of the head (x below the middle) and tested on the other: the best any calibration
    without truth could do with these maps."""
    import torch

    import medsr
    from medsr import uncertainty
    from medsr.upscaling import upscale_volume

    torch.set_num_threads(args.threads)
    truth, affine = load_truth(args.scan, args.factor)
    with tempfile.TemporaryDirectory() as tmp:
        paths, _ = make_stacks(truth, affine, args.factor, Path(tmp))
        out = medsr.fuse(paths, prior="learned")
        grid = Grid(tuple(out.shape[1:]), np.asarray(out.affine, dtype=np.float64))
        members = []
        for path, stack in zip(paths, out.meta["medsr_fuse"]["stacks"]):
            sr = upscale_volume(read_frames(path), method="default")
            members.append(resample_onto(sr.array[0], sr.affine, grid, np.asarray(
                stack["registration"]["matrix_ras"]), outside=np.nan))
    fused, gt = np.asarray(out[0]), on_grid(truth, affine, grid)
    stack_of = np.stack(members)
    body = np.all(np.isfinite(stack_of), axis=0) & (gt > 0.05 * np.percentile(gt, 99.5))
    spread = np.std(stack_of, axis=0)
    change = fused - np.mean(stack_of, axis=0)
    error = fused - gt
    half = np.zeros(gt.shape, dtype=bool)
    half[: gt.shape[0] // 2] = True
    rows = {}
    for label, s, r in (("spread and change", spread, change),
                        ("constant", np.zeros_like(spread), np.zeros_like(spread))):
        cal = uncertainty.fit(s[body & half], r[body & half], error[body & half])
        test = body & ~half
        cover, rho = uncertainty.coverage_and_rank(cal.sd(s[test], r[test]), error[test])
        rows[label] = {**{k: round(v, 4) for k, v in cal.as_dict().items()
                          if isinstance(v, float)}, "coverage_other_half": round(cover, 4),
                       "rank_correlation_other_half": round(rho, 4)}
        print(label, rows[label])
    rmse = float(np.sqrt(np.mean(error[body] ** 2)))
    result = {"scan": args.scan.name, "factor": args.factor, "voxels": int(body.sum()),
              "fused_rmse": round(rmse, 3), "mean_spread": round(float(spread[body].mean()), 3),
              "models": rows, "load": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.scan.name.split(".")[0]
    (args.out / f"{stem}_x{args.factor}_spread.json").write_text(json.dumps(result, indent=2)
                                                                 + "\n")


# leave one stack out: a real multi-stack scan, no truth ----------------------------------------
def crop_to_mask(frames, mask: np.ndarray, margin_mm: float):
    """The stack cut to its mask's bounding box and ``margin_mm`` around it (whole voxels),
    and the mask cut alike."""
    from medsr.geometry import spacing as voxel_size

    hit = np.argwhere(mask > 0)
    pad = np.ceil(margin_mm / voxel_size(frames.affine)).astype(int)
    lo = np.maximum(hit.min(axis=0) - pad, 0)
    hi = np.minimum(hit.max(axis=0) + pad + 1, mask.shape)
    cut = tuple(slice(a, b) for a, b in zip(lo, hi))
    t = np.eye(4)
    t[:3, 3] = lo
    return make_frames(frames.array[0][cut], frames.affine @ t, frames.source), mask[cut]


def loso_inputs(args: argparse.Namespace, mode: str) -> tuple[list, list, list]:
    """Each stack as Frames (cut to its mask's box in mode ``cropped``), its mask (or
    ``None``) and its PSNR data range (the whole stack's 99.5th percentile, in both modes)."""
    stacks, masks, ranges = [], [], []
    for i, path in enumerate(args.stacks):
        frames = read_frames(path)
        frames.source = SourceInfo("nifti", str(path), "float32", "MR")
        ranges.append(float(np.percentile(frames.array, metrics.MR_PERCENTILE)))
        mask = read_frames(args.masks[i]).array[0] > 0.5 if args.masks else None
        if mode == "cropped":
            frames, mask = crop_to_mask(frames, mask, args.margin)
        stacks.append(frames)
        masks.append(mask)
    return stacks, masks, ranges


def stack_operator(frames, grid: Grid, transform: np.ndarray, thickness: float | None):
    from medsr.consistency import SliceProfile
    from medsr.fusion.operators import StackOperator
    from medsr.geometry import spacing as voxel_size

    sp = voxel_size(frames.affine)
    width = thickness / float(sp.max()) if thickness else 1.0
    return StackOperator(frames.array.shape[1:], frames.affine, grid, transform,
                         SliceProfile("box", width))


def ssim_over(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray, axis: int,
              hi: float) -> float:
    """Mean SSIM map (2D, slices along ``axis``) over the ``keep`` voxels; ``pred`` takes
    the truth's values outside ``keep`` (the same for every method)."""
    import torch
    from monai.metrics import compute_ssim_and_cs

    p = np.where(keep, pred, truth)
    a, b = (torch.from_numpy(np.moveaxis(v, axis, 0).astype(np.float32) / hi)[:, None]
            for v in (p, truth))
    ssim_map, _ = compute_ssim_and_cs(a, b, spatial_dims=2, kernel_size=[metrics.SSIM_WINDOW] * 2,
                                      kernel_sigma=[metrics.SSIM_SIGMA] * 2, data_range=1.0,
                                      k1=metrics.SSIM_K1, k2=metrics.SSIM_K2)
    full = np.zeros(p.shape, dtype=np.float64)
    inner = np.moveaxis(full, axis, 0)
    r = metrics.SSIM_WINDOW // 2  # the map is the valid part: the window inside the slice
    inner[:, r:r + ssim_map.shape[2], r:r + ssim_map.shape[3]] = ssim_map[:, 0].numpy()
    inside = np.zeros(p.shape, dtype=bool)
    np.moveaxis(inside, axis, 0)[:, r:r + ssim_map.shape[2], r:r + ssim_map.shape[3]] = True
    return float(full[keep & inside].mean())


def loso_score(pred: np.ndarray, stack: np.ndarray, keep: np.ndarray, brain, axis: int,
               hi: float) -> dict:
    """PSNR and SSIM of a predicted stack against the stack over the ``keep`` voxels, and
    inside the brain mask among them."""
    p, t = np.clip(pred, 0, hi), np.clip(stack, 0, hi)
    row = {"psnr": round(metrics.psnr(p, t, hi, keep), 3),
           "ssim": round(ssim_over(p, t, keep, axis, hi), 4), "voxels": int(keep.sum())}
    if brain is not None:
        inside = keep & brain
        row.update({"psnr_brain": round(metrics.psnr(p, t, hi, inside), 3),
                    "ssim_brain": round(ssim_over(p, t, inside, axis, hi), 4),
                    "voxels_brain": int(inside.sum())})
    return row


def register_all(stacks: list) -> tuple[list[np.ndarray], list[str | None], list[dict]]:
    """Every stack registered to the first, as ``medsr fuse`` does: transforms, why a stack
    does not register (``None``: it does), the registrations' records."""
    from medsr.fusion.fuse import load_stacks, register_stacks

    items = load_stacks(stacks)
    register_stacks(items, 0)
    records = [{"reference": True} if s.registration is None else
               s.registration.as_dict(centre_of(s.array.shape, s.affine)) for s in items]
    for r in records:
        r.pop("matrix_ras", None)
    return [s.transform for s in items], [s.left_out for s in items], records


def predictions(k: int, others: list[int], fused: dict, singles: dict, stacks: list,
                transforms: list, grid: Grid, thickness: float | None) -> tuple[dict, np.ndarray]:
    """Stack ``k`` as each method predicts it (its operator, through its registration, on
    the fused grid), and the voxels of it that every prediction covers."""
    import torch

    from medsr.fusion.operators import SEEN

    to_ref = np.linalg.inv(transforms[others[0]])  # the fused grid is in others[0]'s world
    op = stack_operator(stacks[k], grid, to_ref @ transforms[k], thickness)
    keep = op.mask.numpy().copy()

    def predict(x: np.ndarray) -> np.ndarray:
        return op.forward(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    out = {label: predict(x) for label, x in fused.items()}
    for j, (sr, sr_affine) in singles.items():
        if j == k:
            continue
        move = to_ref @ transforms[j]
        spline = resample_onto(stacks[j].array[0], stacks[j].affine, grid, move, outside=np.nan)
        covered = np.isfinite(spline)
        keep &= predict(covered.astype(np.float32)) >= SEEN
        name = Path(stacks[j].source.path).name
        out[f"{name} default model"] = predict(np.where(
            covered, resample_onto(sr, sr_affine, grid, move), 0))
        out[f"{name} B-spline"] = predict(np.nan_to_num(spline))
    return out, keep


def loso_fold(args: argparse.Namespace, k: int, stacks: list, masks: list, hi: float,
              transforms: list, singles: dict) -> dict:
    """Fuse every stack but ``k``; score each method's prediction of stack ``k``."""
    import medsr
    from medsr.geometry import spacing as voxel_size

    others = [j for j in range(len(stacks)) if j != k]
    thick = [args.slice_thickness] * len(others) if args.slice_thickness else None
    fused, record, seconds = {}, None, {}
    for prior in args.priors.split(","):
        start = time.perf_counter()
        out = medsr.fuse([stacks[j] for j in others], prior=prior, slice_thickness=thick)
        seconds[prior] = round(time.perf_counter() - start, 1)
        fused[f"fused ({prior} prior)"] = out.array[0]
        record = record or out.meta["medsr_fuse"]
    grid = Grid(tuple(out.array.shape[1:]), np.asarray(out.affine, dtype=np.float64))
    preds, keep = predictions(k, others, fused, singles, stacks, transforms, grid,
                              args.slice_thickness)
    target = stacks[k].array[0]
    axis = int(np.argmax(voxel_size(stacks[k].affine)))  # its thick axis: slices across it
    rows = [{"method": label, **loso_score(x, target, keep, masks[k], axis, hi)}
            for label, x in preds.items()]
    return {"left_out": Path(stacks[k].source.path).name, "reference": record["reference"],
            "data_range": round(hi, 3),
            "grid": record["grid"], "seconds": seconds, "rows": rows,
            "fused_stacks": [{"name": s["name"], "left_out": s["left_out"],
                              "residual_over_noise": s.get("residual_over_noise")}
                             for s in record["stacks"]]}


def best_of(rows: list[dict], kind: str, key: str) -> dict:
    return max((r for r in rows if r["method"].endswith(kind)), key=lambda r: r[key])


def loso_table(result: dict) -> str:
    """Markdown, one row per mode, stack left out and region (inside the mask, every voxel
    compared): PSNR / SSIM of the fused volumes and of the best other stack alone by each
    method (best by PSNR in that region)."""
    head = ("| stacks | left out | fused | region | fused, learned prior | fused, plain solve "
            "| best other stack alone, default model | best other stack alone, B-spline |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode in result["modes"]:
        for fold in mode["folds"]:
            rows = fold["rows"]
            kept = sum(s["left_out"] is None for s in fold["fused_stacks"])
            regions = [("brain", "_brain")] if "psnr_brain" in rows[0] else []
            for i, (region, tail) in enumerate([*regions, ("stack", "")]):
                cells = [f"{r[f'psnr{tail}']:.2f} / {r[f'ssim{tail}']:.3f}"
                         for r in rows if r["method"].startswith("fused")]
                for kind in ("default model", "B-spline"):
                    best = best_of(rows, kind, f"psnr{tail}")
                    cells.append(f"{best[f'psnr{tail}']:.2f} / {best[f'ssim{tail}']:.3f} "
                                 f"({best['method'].split('.')[0]})")
                first = [mode["mode"], fold["left_out"].split(".")[0], str(kept)] if i == 0 \
                    else ["", "", ""]
                lines.append("| " + " | ".join([*first, region, *cells]) + " |")
    return "\n".join(lines)


def loso_mode(args: argparse.Namespace, mode: str) -> dict:
    """Every stack that registers left out in turn (``mode``: whole stacks, or each cut to
    its mask's box)."""
    from medsr.upscaling import upscale_volume

    stacks, masks, ranges = loso_inputs(args, mode)
    transforms, failures, registrations = register_all(stacks)
    names = [Path(s.source.path).name for s in stacks]
    ok = [j for j in range(len(stacks)) if failures[j] is None]
    singles = {}
    for j in ok:
        sr = upscale_volume(stacks[j], method="default", slice_thickness=args.slice_thickness)
        singles[j] = (sr.array[0], np.asarray(sr.affine, dtype=np.float64))
    folds = []
    for k in ok if args.folds is None else [ok[i] for i in args.folds]:
        folds.append(loso_fold(args, k, stacks, masks, ranges[k], transforms, singles))
        print_fold(mode, folds[-1])
    return {"mode": mode, "shapes": [list(s.array.shape[1:]) for s in stacks],
            "registration": [{"name": n, "failure": f, **r}
                             for n, f, r in zip(names, failures, registrations)],
            "folds": folds}


def print_fold(mode: str, fold: dict) -> None:
    key = "psnr_brain" if "psnr_brain" in fold["rows"][0] else "psnr"
    print(f"[{mode}] {fold['left_out']} left out (reference {fold['reference']}, "
          f"{fold['seconds']} s)")
    for r in fold["rows"]:
        print(f"  {r['method']:<32} PSNR {r['psnr']:6.2f} SSIM {r['ssim']:.4f}"
              + (f"  brain PSNR {r[key]:6.2f} SSIM {r['ssim_brain']:.4f}"
                 if key == "psnr_brain" else ""))


def loso(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.masks and len(args.masks) != len(args.stacks):
        raise SystemExit(f"{len(args.masks)} masks for {len(args.stacks)} stacks")
    if "cropped" in args.modes and not args.masks:
        args.modes = "whole"
    if args.max_degrees is not None:
        from medsr.fusion import register

        register.MAX_DEGREES = args.max_degrees
    result = {"stacks": [p.name for p in args.stacks], "slice_thickness_mm":
              args.slice_thickness, "priors": args.priors, "margin_mm": args.margin,
              "max_degrees": args.max_degrees, "load": os.getloadavg(), "modes": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.modes.split(","):
        result["modes"].append(loso_mode(args, mode))
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(loso_table(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("quality", "timing", "prepare", "loso", "spread"))
    parser.add_argument("scan", type=Path, nargs="+",
                        help="the thin-slice scan; for loso, the stacks (the first: reference)")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--priors", default="learned,none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/fuse"),
                        help="a folder; for prepare, the .nii.gz to write")
    loso_args = parser.add_argument_group("loso")
    loso_args.add_argument("--masks", type=Path, nargs="+", help="one mask per stack: also "
                           "measure inside it, and with every stack cut to its mask's box")
    loso_args.add_argument("--margin", type=float, default=15.0,
                           help="mm kept around a mask's box")
    loso_args.add_argument("--slice-thickness", type=float, default=None,
                           help="mm, every stack (default: its spacing)")
    loso_args.add_argument("--folds", type=int, nargs="+", default=None,
                           help="which of the registered stacks to leave out (0-based)")
    loso_args.add_argument("--name", default="loso", help="the JSON's name")
    loso_args.add_argument("--max-degrees", type=float, default=None,
                           help="registration's rotation bound (default medsr's)")
    loso_args.add_argument("--modes", default="whole,cropped",
                           help="whole stacks, and each cut to its mask's box (--masks)")
    args = parser.parse_args()
    if args.what == "loso":
        args.stacks = args.scan
    else:
        args.scan = args.scan[0]
    {"quality": quality, "timing": timing, "prepare": prepare, "loso": loso,
     "spread": spread_check}[args.what](args)


if __name__ == "__main__":
    main()
