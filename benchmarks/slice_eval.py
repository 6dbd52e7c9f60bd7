"""Single slices (2D images, the SRCNN/ESPCN setting) upscaled in-plane, against B-spline.

Each slice is the truth: it is degraded in-plane ×f as such data are made (MR: the central
1/f of k-space; CT: f×f pixel boxes), upscaled back by each method through the public API
(a MetaTensor of one slice, ``scale=(f, f, 1)``), and scored with :func:`medsr.evaluation.
evaluate` (PSNR over the slice in the truth's window and in the body, SSIM, MAE in the body).
CT padding outside the reconstruction circle is kept as a scanner keeps it: the low-resolution
slice is air up to its own circle and padding beyond, and the body excludes the padding.
Slices come from 2D DICOM files (one file, one slice) and from the middle of held-out
volumes, read as their own 2D images.

Usage::

    python benchmarks/slice_eval.py /path/MR2_UNCI.dcm /path/693_UNCI.dcm \\
        data/holdout/brain2_image.nrrd:2 data/holdout/colin27_t1.nii.gz:2 \\
        --factors 2,3,4 --name slices_v06
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from acquisitions import jpeg2000  # benchmarks/ is the script's folder


def one_slice(spec: str):
    """``FILE`` (a single-slice image) or ``VOLUME:AXIS`` (its middle slice along AXIS, moved
    to the last axis) as a one-slice MetaTensor with its geometry, and the modality."""
    import torch
    from monai.data import MetaTensor

    import medsr
    from medsr.io import volume_parts
    from medsr.transforms.intensity import guess_modality

    path, _, axis = spec.partition(":")
    vol = medsr.load_volume(path)
    array, affine, source = volume_parts(vol)
    if axis:
        a = int(axis)
        k = array.shape[a] // 2
        array = np.moveaxis(np.take(array, [k], axis=a), a, -1)
        order = [i for i in range(3) if i != a] + [a]
        moved = np.eye(4)
        moved[:3, :3] = affine[:3, :3][:, order]
        moved[:3, 3] = affine[:3, :3][:, a] * k + affine[:3, 3]
        affine = moved
    modality = (source.modality or guess_modality(array)).upper()
    vol = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, np.float32))[None],
                     affine=torch.as_tensor(affine))
    return vol, modality


def run(spec: str, factors: list[int], methods: list[str],
        ratios: list[float | None] = (None,), uncertainty: bool = False) -> list[dict]:
    import torch
    from monai.data import MetaTensor

    from medsr.consistency import SliceProfile, degrade_axes
    from medsr.geometry import resampled_affine
    from medsr.metrics import body_mask
    from medsr.padding import AIR_HU, PADDING_BELOW_HU

    full, modality = one_slice(spec)
    rows = []
    for f in factors:
        truth = full[0].numpy()
        truth = truth[: truth.shape[0] // f * f, : truth.shape[1] // f * f]
        affine = full.affine.numpy()
        prof = SliceProfile("sinc") if modality == "MR" else SliceProfile("box", 1.0)
        pad = truth < PADDING_BELOW_HU if modality == "CT" else np.zeros(truth.shape, bool)
        # a scanner's low-resolution slice: air up to its own circle, padding beyond it
        low = degrade_axes(np.where(pad, AIR_HU, truth), [(0, f, prof), (1, f, prof)])
        low_pad = degrade_axes(pad.astype(np.float32), [(0, f, prof), (1, f, prof)]) > 0.5
        if pad.any():
            low[low_pad] = float(np.median(truth[pad]))
        gt = MetaTensor(torch.from_numpy(truth)[None], affine=torch.as_tensor(affine))
        mask = body_mask(truth, modality)[0] & ~pad  # PSNR, MAE: inside the circle
        lo = -1024.0 if modality == "CT" else 0.0
        hi = 3071.0 if modality == "CT" else float(np.percentile(truth, 99.5))
        for ratio in ratios:
            lossy = low if ratio is None else \
                jpeg2000(low[..., 0], ratio, 4096.0 if lo < 0 else 0.0)[..., None]
            low_vol = MetaTensor(torch.from_numpy(np.ascontiguousarray(lossy, np.float32))[None],
                                 affine=torch.as_tensor(resampled_affine(affine, [f, f, 1])))
            rows += _methods(spec, modality, f, ratio, low_vol, gt, mask, (lo, hi), methods,
                             uncertainty)
    return rows


def _methods(spec, modality, f, ratio, low_vol, gt, mask, window, methods,
             uncertainty=False) -> list[dict]:
    """Every method on one low-resolution slice, scored against its truth."""
    import medsr
    from medsr.evaluation import evaluate

    truth, rows, base = gt[0].numpy(), [], None
    for method in ["bspline", *methods]:
        t0 = time.perf_counter()
        sd = None
        if uncertainty and method != "bspline":
            pred, sd = medsr.upscale(low_vol, (f, f, 1), method=method, modality=modality,
                                     uncertainty=True)
        else:
            pred = medsr.upscale(low_vol, (f, f, 1), method=method, modality=modality)
        seconds = time.perf_counter() - t0
        r = evaluate(pred, gt, mask=mask, data_range=window, axis=2)
        base = base or r
        row = {"slice": spec, "modality": modality, "shape": list(truth.shape[:2]),
               "factor": f, "jpeg2000_ratio": ratio, "method": method,
               "ran": pred.meta.get("medsr_method"),
               "psnr": r.psnr, "gain_db": r.psnr - base.psnr, "psnr_body": r.psnr_mask,
               "gain_body_db": r.psnr_mask - base.psnr_mask, "ssim": r.ssim,
               "ssim_gain": r.ssim - base.ssim, "mae": r.mae,
               "selfcheck": pred.meta.get("medsr_selfcheck"),
               "seconds": round(seconds, 2)}
        if sd is not None:  # held out: the share of body pixels within 2 sd, and rank ρ
            err = np.abs(pred[0].numpy() - truth)[mask]
            spread = sd[0].numpy()[mask]
            row["coverage_2sd"] = float(np.mean(err <= 2 * spread))
            ranks = [np.argsort(np.argsort(v)) for v in (err, spread)]
            row["rank_correlation"] = float(np.corrcoef(*ranks)[0, 1])
        rows.append(row)
        print(f"{Path(spec).name:<28} x{f} {f'j2k {ratio:g}:1' if ratio else '':<10} "
              f"{method:<8} -> {row['ran']:<18} "
              f"PSNR {r.psnr:6.2f} ({row['gain_db']:+.2f}) body {r.psnr_mask:6.2f} "
              f"({row['gain_body_db']:+.2f}) SSIM {r.ssim:.4f} "
              f"({row['ssim_gain']:+.4f}) MAE {r.mae:8.2f} {seconds:5.1f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| slice | modality | size | ×f | JPEG 2000 | method (ran) | PSNR (Δ B-spline) | "
             "PSNR body (Δ) | SSIM (Δ) | MAE body | coverage 2 sd (ρ) | s |",
             "| --- " * 12 + "|"]
    for r in rows:
        ratio = r.get("jpeg2000_ratio")
        lines.append(f"| {Path(r['slice']).name} | {r['modality']} | "
                     f"{r['shape'][0]}×{r['shape'][1]} | {r['factor']} | "
                     f"{f'{ratio:g}:1' if ratio else '–'} | {r['method']} "
                     f"({r['ran']}) | {r['psnr']:.2f} ({r['gain_db']:+.2f}) | "
                     f"{r['psnr_body']:.2f} ({r['gain_body_db']:+.2f}) | "
                     f"{r['ssim']:.4f} ({r['ssim_gain']:+.4f}) | {r['mae']:.2f} | "
                     + (f"{r['coverage_2sd']:.3f} ({r['rank_correlation']:.2f}) | "
                        if "coverage_2sd" in r else "– | ")
                     + f"{r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", nargs="+", help="FILE (one slice) or VOLUME:AXIS")
    parser.add_argument("--factors", default="2,3,4")
    parser.add_argument("--methods", default="auto")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also the uncertainty map: its held-out coverage at 2 sd and rank "
                             "correlation with the error, in the body")
    parser.add_argument("--jpeg2000", default="",
                        help="comma-separated compression ratios: the low-resolution slice also "
                             "through lossy JPEG 2000 at each (as an archive keeps it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="slices")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    for spec in args.slices:
        ratios = [None] + [float(r) for r in args.jpeg2000.split(",") if r]
        rows += run(spec, [int(f) for f in args.factors.split(",")], args.methods.split(","),
                    ratios, args.uncertainty)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_before": load, "load_after": os.getloadavg()}, "rows": rows}
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / f"{args.name}.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
