"""Where the time of ``medsr upscale`` goes, stage by stage, in one process.

Runs the CLI in this process with timers wrapped around its stages (nothing in medsr is
changed): start-up (the CLI's imports), read, normalisation, graph export (and
the ONNX Runtime session), each plane view, the consistency projection with its
re-degradation figures, uncertainty (with ``--uncertainty``), write; "other" is the rest
(memory plan, slab bookkeeping, the B-spline of the sd map, ...). Prints a markdown table and
writes JSON with the machine and its load.

Usage::

    python benchmarks/profile_default.py SCAN [--scale 1 1 3] [--repeats 1] \\
        [--out benchmarks/results/profile_default.json] [MORE UPSCALE ARGUMENTS]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

T0 = time.perf_counter()
TIMES: dict[str, float] = defaultdict(float)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the speed table


def machine() -> dict:
    """CPU model, cores and load average (the speed table's, without the GPU query)."""
    from speed_table import machine as described

    info = described()
    return {k: info[k] for k in ("cpu", "cores", "load", "python")}


def timed(owner, name: str, stage: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``TIMES[stage]`` (nothing
    when ``owner`` has no such name: an older medsr)."""
    inner = getattr(owner, name, None)
    if inner is None:
        return

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[stage] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def instrument() -> None:
    import medsr.cli
    import medsr.inference
    import medsr.io
    import medsr.methods
    import medsr.runtime
    import medsr.upscaling
    from medsr.transforms import intensity

    timed(medsr.io, "read_frames" if hasattr(medsr.io, "read_frames") else "load_volume",
          "read")
    timed(medsr.io, "save_volume", "write")
    timed(intensity, "fit_scaling", "normalisation")
    # no torch or ONNX Runtime imported here: a run whose graph is cached loads no torch
    timed(medsr.runtime, "_cached_graph", "graph export")  # torch's export, or the cache
    timed(medsr.runtime, "_new_session", "ORT session")
    timed(medsr.upscaling, "project", "projection")
    timed(medsr.upscaling, "_sq_error", "re-degradation figures")
    timed(medsr.upscaling, "calibrate", "uncertainty: calibration")
    timed(medsr.upscaling, "spread", "uncertainty: spread")

    # each plane view: the runner made per view, timed per call
    made = medsr.inference.plane_runner
    views = [0]

    def plane_runner(*args, **kwargs):
        run = made(*args, **kwargs)
        views[0] += 1
        stage = f"plane view {views[0]}"

        def timed_run(x):
            t = time.perf_counter()
            try:
                return run(x)
            finally:
                TIMES[stage] += time.perf_counter() - t

        return timed_run

    medsr.inference.plane_runner = plane_runner

    # normalisation inside predict_views: scaling.forward on the slab
    forward = intensity.Scaling.forward

    def scaled(self, x):
        t = time.perf_counter()
        try:
            return forward(self, x)
        finally:
            TIMES["normalisation"] += time.perf_counter() - t

    intensity.Scaling.forward = scaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", type=Path)
    parser.add_argument("--scale", type=int, nargs=3, default=[1, 1, 3])
    parser.add_argument("--out", type=Path, default=None)
    args, args.extra = parser.parse_known_args()  # the rest: `medsr upscale` arguments
    args.extra = [a for a in args.extra if a != "--"]
    load_before = os.getloadavg()
    t = time.perf_counter()
    import medsr.cli  # the CLI's own start-up
    TIMES["start-up: CLI"] = time.perf_counter() - t
    # torch and ONNX Runtime load inside the run where it needs them (a run whose graph is
    # cached needs no torch), so their import time counts in the stage that loads them
    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("out" + "".join(args.scan.suffixes))
        argv = ["upscale", str(args.scan), "-o", str(out), "--scale",
                *map(str, args.scale), *args.extra]
        t = time.perf_counter()
        try:
            medsr.cli.app(argv)
        except SystemExit as done:
            if done.code:
                raise
        run = time.perf_counter() - t
    total = time.perf_counter() - T0
    stages = dict(TIMES)
    stages["ORT session"] = stages.get("ORT session", 0.0)
    accounted = sum(v for k, v in stages.items() if not k.startswith("start-up"))
    stages["other"] = run - accounted
    result = {"machine": machine(), "load_before": [round(x, 2) for x in load_before],
              "scan": str(args.scan), "scale": args.scale, "extra": args.extra,
              "total_in_process_s": round(total, 3),
              "stages_s": {k: round(v, 3) for k, v in stages.items()}}
    print(f"{args.scan.name} ×{args.scale}: {total:.1f} s in process "
          f"(load {result['load_before']} -> {result['machine']['load']})")
    print("| stage | s | share |")
    print("| --- | --- | --- |")
    for key, value in stages.items():
        print(f"| {key} | {value:.2f} | {100 * value / total:.0f} % |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
