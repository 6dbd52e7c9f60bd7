"""The plane networks' engine and arithmetic against quality and time, on held-out scans.

Each held-out thin scan is slab-averaged ×f along ``axis`` (as ``benchmarks/int8_eval.py``)
and upscaled back by the default model with its plane networks in ONNX Runtime float32 (the
v0.8 path), OpenVINO float32 and OpenVINO at precision ``auto`` (bfloat16 on CPUs that
multiply it natively), one after the other in one process. Printed as JSON lines, and written
to ``--out``: the gain over B-spline (volume PSNR against the thin truth) and the wall time
of each ``medsr.upscale`` call (the graph is cached before the first timing).

Usage::

    python benchmarks/precision_eval.py \\
        /work/data/base/holdout_extra/invesalius_ct_head.nii.gz:2:CT:3 \\
        /work/data/base/holdout/colin27_t1.nii.gz:2:MR:5 --out benchmarks/results/x.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {"onnxruntime fp32": ("onnx", "fp32"), "openvino fp32": ("openvino", "fp32"),
            "openvino auto": ("openvino", "auto")}


def main() -> None:
    import medsr
    from medsr import runtime
    from medsr.evaluation import evaluate

    from int8_eval import thick

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="SCAN:AXIS:MODALITY:FACTOR (held out)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    real_engine = runtime.engine
    rows = []
    for case in args.cases:
        path, axis, modality, factor = case.rsplit(":", 3)
        axis, factor = int(axis), int(factor)
        truth, low = thick(path, axis, factor)
        scale = [1, 1, 1]
        scale[axis] = factor
        base = evaluate(medsr.upscale(low, scale, method="bspline"), truth, axis=axis).psnr
        row = {"scan": Path(path).name, "axis": axis, "factor": factor,
               "bspline_psnr": round(base, 3), "bf16_cpu": runtime.native_bf16()}
        medsr.upscale(low, scale, method="default", modality=modality)  # the graph cached
        for name, (kind, precision) in VARIANTS.items():
            runtime.engine = lambda backend, kind=kind: kind if backend == "auto" \
                else real_engine(backend)
            runtime.set_precision(precision)
            start = time.perf_counter()
            out = medsr.upscale(low, scale, method="default", modality=modality)
            row[name] = {"gain_db": round(evaluate(out, truth, axis=axis).psnr - base, 3),
                         "seconds": round(time.perf_counter() - start, 2)}
        runtime.engine = real_engine
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
