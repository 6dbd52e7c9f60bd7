"""Held-out evaluation of learned SR on every grid: in-plane ×f, every axis at once, exact
target spacings, against linear and cubic B-spline interpolation.

A real thin scan never used in training is degraded as such data are made (MR in-plane:
the central 1/f of k-space; CT in-plane: f×f pixel boxes; through-plane: slab averages of f
thin slices), upscaled back by each method, and compared with the truth (per-slice PSNR/SSIM
across the last axis, PSNR over the volume, MAE inside the automatic body mask; the MONAI
metrics of :mod:`medsr.evaluation`). Learned rows also give the consistency figure, and with
``--uncertainty`` the share of body voxels whose error is within 2 sd. Seconds are the
upscale call on this machine (load in the JSON).

Usage::

    scripts/get_data.sh data
    python benchmarks/grids_eval.py --data data --out benchmarks/results/grids.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

import medsr
from medsr.consistency import SliceProfile, degrade_axes
from medsr.evaluation import evaluate
from medsr.geometry import resampled_affine, target_grid
from medsr.metrics import body_mask
from medsr.resample import resample_index_space


def _crop(vol: np.ndarray, factors) -> np.ndarray:
    return vol[tuple(slice(0, n // f * f) for n, f in zip(vol.shape, factors))]


def _degrade(truth: np.ndarray, factors, inplane: str) -> np.ndarray:
    ops = []
    for axis, f in enumerate(factors):
        if f > 1:
            prof = SliceProfile("sinc") if inplane == "sinc" and axis < 2 else \
                SliceProfile("box", 1.0)
            ops.append((axis, f, prof))
    return degrade_axes(truth, ops)


def _volume(array: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                      affine=torch.as_tensor(affine))


def spacing_ratio(affine: np.ndarray, spacing) -> np.ndarray:
    from medsr.geometry import spacing as voxel_size

    return voxel_size(affine) / np.asarray(spacing, dtype=np.float64)


def _onto(pred: MetaTensor, gt: MetaTensor) -> MetaTensor:
    """``pred`` resampled (cubic B-spline) onto ``gt``'s grid."""
    src, dst = pred.affine.numpy(), gt.affine.numpy()
    to = np.linalg.solve(src, dst)
    out = resample_index_space(pred[0].numpy(), gt.shape[1:], np.diag(to)[:3], to[:3, 3],
                               "bspline")
    result = _volume(out, dst)
    result.meta.update({k: v for k, v in pred.meta.items() if k.startswith("medsr_")})
    return result


def case(name: str, path: Path, modality: str, factors, methods, out: list,
         uncertainty: bool, spacing=None, budget: float = 60.0,
         figures: Path | None = None) -> None:
    """Degrade ``path`` by ``factors`` (axes < 2 in-plane), upscale, evaluate, append rows."""
    src = medsr.load_volume(path)
    truth = _crop(src[0].numpy().astype(np.float32), factors)
    affine = src.affine.numpy()
    inplane = "sinc" if modality == "MR" else "box"
    lr = _degrade(truth, factors, inplane)
    lr_affine = resampled_affine(affine, [float(f) for f in factors])
    gt_affine = affine
    if spacing is not None:  # truth on the target grid: the thin scan resampled onto it
        shape, gt_affine, _ = target_grid(lr.shape, lr_affine, target_spacing=spacing)
        to = np.linalg.solve(affine, gt_affine)
        truth = resample_index_space(truth, shape, np.diag(to)[:3], to[:3, 3], "bspline")
    gt = _volume(truth, gt_affine)
    mask = body_mask(truth, modality)[0]
    lo = -1024.0 if modality == "CT" else 0.0
    hi = 3071.0 if modality == "CT" else float(np.percentile(truth, 99.5))
    shown: dict[str, np.ndarray] = {}
    if spacing is not None:  # the integer factor below the ratio, then resampled
        methods = [*methods, "default (floor factor)"]
    for method in methods:
        floor = method.endswith("(floor factor)")
        kw = {"modality": modality, "device": "cpu"}
        if method.startswith("model="):  # a candidate model folder
            kw["model"] = method.split("=", 1)[1]
        else:
            kw["method"] = method.split(" ")[0]
        if spacing is not None and not floor:
            kw["spacing"] = spacing
        elif floor:
            ratio = spacing_ratio(lr_affine, spacing)
            kw["scale"] = tuple(max(1, int(np.floor(r + 1e-3))) for r in ratio)
        else:
            kw["scale"] = tuple(factors)
        learned = method not in ("linear", "bspline")
        if method == "self-supervised":
            kw["self_supervised"] = {"budget_seconds": budget}
        t0 = time.perf_counter()
        try:
            res = medsr.upscale(_volume(lr, lr_affine), uncertainty=uncertainty and learned
                                and not floor, **kw)
        except medsr.MedsrError as err:
            print(f"{name} {method}: {err}")
            continue
        pred, sd = res if isinstance(res, tuple) else (res, None)
        if floor:
            pred = _onto(pred, gt)
            pred.meta["medsr_method"] = method
        seconds = time.perf_counter() - t0
        r = evaluate(pred, gt, mask=mask, data_range=(lo, hi), axis=2)
        row = {"case": name, "scan": path.name, "modality": modality, "factors": list(factors),
               "spacing": list(spacing) if spacing else None, "method": method,
               "ran": pred.meta["medsr_method"], "psnr": r.psnr,
               "psnr_slice_mean": r.psnr_slice_mean, "ssim": r.ssim, "mae": r.mae,
               "seconds": round(seconds, 1),
               "consistency_db": pred.meta.get("medsr_consistency_psnr")}
        if sd is not None:
            err = np.abs(pred[0].numpy() - truth)[mask]
            row["coverage_2sd"] = float(np.mean(err <= 2 * sd[0].numpy()[mask]))
        out.append(row)
        if method in ("bspline", "default", "self-supervised"):
            shown[row["ran"]] = pred[0].numpy()
        print(f"{path.name[:14]:<14} {name:<28} {method:<16} {row['ran']:<28} "
              f"PSNR {r.psnr:6.2f}  SSIM "
              f"{r.ssim:.4f}  MAE {r.mae:7.2f}  {seconds:5.1f} s"
              + (f"  cover {row['coverage_2sd']:.3f}" if sd is not None else ""), flush=True)
    if figures is not None and spacing is None and shown:
        from medsr.figures import plot_slices
        from medsr.geometry import spacing as voxel_size

        low = lr
        for axis, f in enumerate(factors):
            low = np.repeat(low, f, axis=axis)
        figures.mkdir(parents=True, exist_ok=True)
        stem = f"{path.name.split('.')[0]}_{'x'.join(str(f) for f in factors)}"
        plot_slices(truth, low, shown, voxel_size(affine), 0, (lo, hi),
                    figures / f"{stem}.png", title=f"{path.name}: {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grids.json"))
    parser.add_argument("--methods", default="linear,bspline,default",
                        help="comma-separated: linear, bspline, default, self-supervised, or "
                             "model=DIR (a trained model folder)")
    parser.add_argument("--selfsup", action="store_true",
                        help="also self-supervised SR where the scan has a finer plane")
    parser.add_argument("--uncertainty", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated case name prefixes")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for a figure per case (truth, low resolution, B-spline, "
                             "learned, error maps)")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    methods = args.methods.split(",")
    h, x = args.data / "holdout", args.data / "holdout_extra"
    cases = []
    for f in (2, 3, 4):
        cases += [(f"MR in-plane x{f} (k-space)", h / "colin27_t1.nii.gz", "MR", (f, f, 1), None),
                  (f"MR in-plane x{f} (k-space)", h / "brain2_image.nrrd", "MR", (f, f, 1), None),
                  (f"CT in-plane x{f} (box)", h / "lung2_image.nrrd", "CT", (f, f, 1), None),
                  (f"CT in-plane x{f} (box)", x / "invesalius_ct_head.nii.gz", "CT", (f, f, 1),
                   None)]
    cases += [("MR all axes x2", h / "colin27_t1.nii.gz", "MR", (2, 2, 2), None),
              ("CT all axes x2", x / "invesalius_ct_head.nii.gz", "CT", (2, 2, 2), None),
              ("MR all axes x3", h / "colin27_t1.nii.gz", "MR", (3, 3, 3), None),
              ("CT all axes x3", x / "invesalius_ct_head.nii.gz", "CT", (3, 3, 3), None),
              ("MR 2x2x3 mm -> 1 mm", h / "colin27_t1.nii.gz", "MR", (2, 2, 3), None),
              ("CT 2x2x3 -> pixel and 5 mm", h / "lung2_image.nrrd", "CT", (2, 2, 3), None),
              ("MR 2x2x4 mm -> 1 mm", h / "colin27_t1.nii.gz", "MR", (2, 2, 4), None),
              ("MR 3.5 mm -> spacing 1x1x1", x / "colin27_t1_0p5mm.nii.gz", "MR", (2, 2, 7),
               (1.0, 1.0, 1.0))]
    rows: list = []
    for name, path, modality, factors, spacing in cases:
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        if not path.is_file():
            print(f"missing {path} (scripts/get_data.sh)")
            continue
        ms = list(methods)
        if args.selfsup and factors[2] > 1:
            ms.append("self-supervised")
        case(name, path, modality, factors, ms, rows, args.uncertainty, spacing,
             figures=args.figures)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                        "cores": os.cpu_count(), "load": os.getloadavg(),
                                        "rows": rows}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(table(rows))


def table(rows: list[dict]) -> str:
    """A markdown table: one row per scan, case and method, gains over B-spline."""
    base = {(r["case"], r["scan"]): r for r in rows if r["method"] == "bspline"}
    lines = ["| case | scan | method | PSNR dB | Δ B-spline | SSIM | MAE (body) | consistency dB "
             "| coverage 2 sd | s |", "| --- " * 10 + "|"]
    for r in rows:
        b = base.get((r["case"], r["scan"]))
        gain = f"{r['psnr'] - b['psnr']:+.2f}" if b and r is not b else ""
        cons = r.get("consistency_db")
        cons = "" if cons is None else "exact" if math.isinf(cons) else f"{cons:.0f}"
        cover = f"{r['coverage_2sd']:.3f}" if "coverage_2sd" in r else ""
        lines.append(f"| {r['case']} | {r['scan']} | {r['ran']} | {r['psnr']:.2f} | {gain} | "
                     f"{r['ssim']:.4f} | {r['mae']:.2f} | {cons} | {cover} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
