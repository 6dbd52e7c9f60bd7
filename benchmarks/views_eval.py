"""Does the second plane view of the default through-plane model earn its cost?

The 2D model runs on the planes that contain the thick axis; a scan with two fine in-plane
axes has two such families (two views), and the output is their mean. One view halves the
network's work. Held-out thin scans are slab-averaged ×f along ``axis`` and upscaled back with
both views and with one (the model card's ``"views"`` key); PSNR against the thin truth and
wall time of each are printed as JSON lines.

Usage::

    python benchmarks/views_eval.py data/holdout_extra/invesalius_ct_head.nii.gz:2:CT \\
        data/holdout/colin27_t1.nii.gz:2:MR --factors 3,5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    import medsr
    from medsr.evaluation import evaluate
    from medsr.io import load_volume, make_volume, volume_parts
    from medsr.methods import load_cached
    from medsr.models import default_model
    from medsr.transforms.degrade import simulate_thick_slices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="SCAN:AXIS:MODALITY")
    parser.add_argument("--factors", default="3,5")
    args = parser.parse_args()
    for case in args.cases:
        path, axis, modality = case.rsplit(":", 2)
        axis = int(axis)
        array, affine, source = volume_parts(load_volume(path))
        _, card = load_cached(default_model(modality), "cpu")
        for f in (int(v) for v in args.factors.split(",")):
            keep = array.shape[axis] // f * f
            truth = make_volume(np.take(array, np.arange(keep), axis=axis), affine, source)
            low = simulate_thick_slices(truth, axis, f)
            scale = [1, 1, 1]
            scale[axis] = f
            base = evaluate(medsr.upscale(low, scale, method="bspline"), truth, axis=axis).psnr
            row = {"scan": path, "axis": axis, "factor": f, "bspline_psnr": round(base, 3)}
            for views in ("both", "one"):
                card["views"] = views  # the cached card: what the default method will use
                t0 = time.perf_counter()
                out = medsr.upscale(low, scale, method="default", modality=modality,
                                    device="cpu")
                row[views] = {"gain_db": round(evaluate(out, truth, axis=axis).psnr - base, 3),
                              "seconds": round(time.perf_counter() - t0, 1)}
            card.pop("views")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
