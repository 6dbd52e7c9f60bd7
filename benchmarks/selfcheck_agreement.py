"""Does the per-scan self-check (:mod:`medsr.selfcheck`) agree with the held-out truth?

Held-out thin real scans are degraded (box, ×``factor`` along ``axis``; optionally with noise
on the thick slices: Rician σ = 3 % of the maximum for MR, Gaussian σ = 20 HU for CT) and
upscaled with B-spline and a learned method (asked explicitly, so its output and its
self-check are both kept). The check's verdict (network beats B-spline on the scan's own
in-plane pairs) is compared with the held-out verdict (network beats B-spline against the
thin-slice truth), and what ``--method auto`` would have delivered is noted.

Usage::

    python benchmarks/selfcheck_agreement.py data/holdout/colin27_t1.nii.gz \\
        data/holdout/brain2_image.nrrd:0 --factors 3,5 --noise none,rician \\
        --methods default[,self-supervised]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def run_case(path: Path, axis: int, factor: int, noise: str, methods: list[str],
             options: dict) -> list[dict]:
    import torch

    import medsr
    from medsr.evaluation import evaluate
    from medsr.io import load_volume, make_volume, volume_parts
    from medsr.transforms.degrade import add_noise, simulate_thick_slices
    from medsr.transforms.intensity import guess_modality

    array, affine, source = volume_parts(load_volume(path))
    modality = (source.modality or guess_modality(array)).upper()
    keep = array.shape[axis] // factor * factor
    truth = make_volume(np.take(array, np.arange(keep), axis=axis), affine, source)
    low = simulate_thick_slices(truth, axis, factor)
    sigma = None
    if noise != "none":
        sigma = 20.0 if modality == "CT" else 0.03 * float(array.max())
        gen = torch.Generator().manual_seed(0)
        low = add_noise(low, sigma, rician=modality != "CT", generator=gen)
    scale = [1, 1, 1]
    scale[axis] = factor
    base = evaluate(medsr.upscale(low, scale, method="bspline"), truth, axis=axis).psnr
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        pred = medsr.upscale(low, scale, method=name, **options.get(name, {}))
        psnr = evaluate(pred, truth, axis=axis).psnr
        check = pred.meta.get("medsr_selfcheck", {})
        held_out = psnr > base
        row = {"scan": path.name, "modality": modality, "axis": axis, "factor": factor,
               "noise": noise, "sigma": sigma, "method": name,
               "heldout_psnr": psnr, "heldout_bspline_psnr": base,
               "heldout_gain_db": psnr - base, "check": check,
               "check_gain_db": (check["learned_psnr"] - check["bspline_psnr"]) if check
               else None,
               "agree": check["passed"] == held_out if check else None,
               "auto_delivers": name if not check or check["passed"] else "bspline",
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        gain = row["check_gain_db"]
        print(f"{path.name} ax{axis} x{factor} {noise:<6} {name:<15} held-out "
              f"{row['heldout_gain_db']:+.2f} dB, check "
              f"{'skipped' if gain is None else f'{gain:+.2f} dB'}, agree {row['agree']}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", nargs="+", help="SCAN or SCAN:AXIS")
    parser.add_argument("--factors", default="3")
    parser.add_argument("--noise", default="none,rician", help="none and/or rician")
    parser.add_argument("--methods", default="default")
    parser.add_argument("--budget-seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="selfcheck_agreement")
    args = parser.parse_args()
    options = {}
    if args.budget_seconds is not None:
        options["self-supervised"] = {"self_supervised": {"budget_seconds": args.budget_seconds}}
    load = os.getloadavg()
    rows = []
    for spec in args.scans:
        path, _, axis = spec.partition(":")
        for f in (int(v) for v in args.factors.split(",")):
            for noise in args.noise.split(","):
                rows += run_case(Path(path), int(axis or 2), f, noise, args.methods.split(","),
                                 options)
    checked = [r for r in rows if r["agree"] is not None]
    agree = sum(r["agree"] for r in checked)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_before": " ".join(f"{v:.2f}" for v in load),
                          "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())},
              "agree": agree, "checked": len(checked), "cases": len(rows), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [("| scan | ×f | noise | method | held-out gain | self-check gain | agree | auto "
              "delivers |"), "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        check = "–" if r["check_gain_db"] is None else f"{r['check_gain_db']:+.2f} dB"
        lines.append(f"| {r['scan']} (axis {r['axis']}) | {r['factor']} | {r['noise']} | "
                     f"{r['method']} | {r['heldout_gain_db']:+.2f} dB | {check} | "
                     f"{ {True: 'yes', False: 'no', None: '–'}[r['agree']]} | "
                     f"{r['auto_delivers']} |")
    lines.append(f"\nThe check agrees with the held-out truth in {agree} of {len(checked)} "
                 f"checked cases ({len(rows) - len(checked)} without a high-resolution plane "
                 "to check on).")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
