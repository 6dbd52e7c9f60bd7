"""Self-supervised SR's gain against held-out truth for a given number of training steps and
learning rate: what the step cap and learning rate of :mod:`medsr.selfsup` are chosen from.

A thin scan is slab-averaged ×``factor`` along ``axis``; each ``STEPS[:LR]`` argument fits the
self-supervised model for exactly that many steps and upscales back; the PSNR gain over
B-spline against the thin truth, the held-out pairs' own gain, and the wall time of the call
are printed (the machine's load changes the times, not the gains).

Usage::

    python benchmarks/selfsup_steps.py data/holdout_extra/invesalius_ct_head.nii.gz \\
        150 300 150:0.0005 300:0.0005 [--axis 2] [--factor 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    import medsr
    from medsr.evaluation import evaluate
    from medsr.io import load_volume, make_volume, volume_parts
    from medsr.transforms.degrade import simulate_thick_slices
    from medsr.transforms.intensity import guess_modality

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan")
    parser.add_argument("runs", nargs="+", help="STEPS or STEPS:LEARNING_RATE")
    parser.add_argument("--axis", type=int, default=2)
    parser.add_argument("--factor", type=int, default=3)
    args = parser.parse_args()
    array, affine, source = volume_parts(load_volume(args.scan))
    modality = (source.modality or guess_modality(array)).upper()
    keep = array.shape[args.axis] // args.factor * args.factor
    truth = make_volume(np.take(array, np.arange(keep), axis=args.axis), affine, source)
    low = simulate_thick_slices(truth, args.axis, args.factor)
    scale = [1, 1, 1]
    scale[args.axis] = args.factor
    base = evaluate(medsr.upscale(low, scale, method="bspline"), truth, axis=args.axis).psnr
    for run in args.runs:
        steps, _, lr = run.partition(":")
        options = {"steps": int(steps), **({"lr": float(lr)} if lr else {})}
        t0 = time.perf_counter()
        out = medsr.upscale(low, scale, method="self-supervised", self_supervised=options,
                            modality=modality)
        fitted = out.meta.get("medsr_self_supervised", {})
        print(json.dumps({**options, "gain_db": round(
            evaluate(out, truth, axis=args.axis).psnr - base, 3),
            "held_out_gain_db": fitted.get("held_out_gain_db"),
            "seconds": round(time.perf_counter() - t0, 1), "train_seconds": fitted.get("seconds"),
            "load": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
