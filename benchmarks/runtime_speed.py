"""CPU speed of the plane networks per runtime: PyTorch eager, PyTorch channels-last, ONNX
Runtime; back to back in one process, so a shared machine's load affects them alike.

Usage::

    python benchmarks/runtime_speed.py [MODEL ...] [--planes 64] [--size 256] [--width 36] \\
        [--factor 3] [--repeats 3]

Dynamic int8 quantisation (``torch.ao.quantization.quantize_dynamic``) only touches Linear
layers, which these convolutional networks do not have, so it is not listed; static int8 and
``torch.compile`` were not measured.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from medsr.checkpoint import load_model
from medsr.models import MODELS_DIR
from medsr.resample import upsample_axis
from medsr.runtime import plane_runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path,
                        default=[MODELS_DIR / "default_mr", MODELS_DIR / "default_ct"])
    parser.add_argument("--planes", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=36)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    print(f"torch threads {torch.get_num_threads()}; {args.planes} planes of "
          f"{args.size}×{args.width} ×{args.factor}")
    print("| model | runtime | s per plane batch (median) | planes/s | max |diff| vs eager |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.models:
        net, card = load_model(path)
        lr = np.random.default_rng(0).random((args.planes, args.size, args.width),
                                             dtype=np.float32)
        refine = card.get("input") == "interpolated"
        x = upsample_axis(lr, 2, args.factor, "bspline") if refine else lr
        planes = np.ascontiguousarray(x)[:, None]  # the runners take and give arrays
        factor = 1 if refine else args.factor
        runners = {"torch eager": plane_runner(net, cpu, factor, planes[:1], "torch"),
                   "onnxruntime": plane_runner(net, cpu, factor, planes[:1], "onnx")}
        reference = None
        for name, run in runners.items():
            run(planes[:2])  # warm up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                y = run(planes)
                times.append(time.perf_counter() - t0)
            reference = y if reference is None else reference
            s = statistics.median(times)
            diff = float(np.abs(y - reference).max())
            print(f"| {path.name} ({card['network']['name']}) | {name} | {s:.2f} | "
                  f"{args.planes / s:.1f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
