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

Usage::

    scripts/get_data.sh data      # data/holdout/colin27_t1.nii.gz (Colin27, apt mricron-data)
    python benchmarks/fuse_eval.py quality data/holdout/colin27_t1.nii.gz --out docs/fuse
    python benchmarks/fuse_eval.py timing data/holdout/colin27_t1.nii.gz --out docs/fuse
    # a second scan: fetch github:datalad/example-dicom-structural, then its dicoms/ folder
    python benchmarks/fuse_eval.py prepare dicoms/ --out philips_t1_1mm.nii.gz
    python benchmarks/fuse_eval.py quality philips_t1_1mm.nii.gz --out docs/fuse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("quality", "timing", "prepare"))
    parser.add_argument("scan", type=Path)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--priors", default="learned,none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/fuse"),
                        help="a folder; for prepare, the .nii.gz to write")
    args = parser.parse_args()
    {"quality": quality, "timing": timing, "prepare": prepare}[args.what](args)


if __name__ == "__main__":
    main()
