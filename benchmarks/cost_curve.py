"""Cost curve of ``medsr upscale``: wall time and peak memory against output size, end to end.

Volumes are built from a real CT (default: pyradiomics' lung CT, 512×512×48, 5 mm slices),
cropped in-plane and mirror-tiled along z to the sizes asked for, written as int16 NIfTI
beforehand, and upscaled ×5 along z by a fresh ``medsr upscale`` process each (process start
to file written). Peak memory is that child's maximum RSS (``os.wait4``). The memory model of
:mod:`medsr.memory` is printed beside each measurement, and the largest output it lets into
a memory budget (default 8 GiB) is reported.

Getting the source::

    pip download --no-deps --no-build-isolation -d /tmp/pr pyradiomics==3.0.1
    tar -xzf /tmp/pr/pyradiomics-3.0.1.tar.gz -C /tmp/pr pyradiomics-3.0.1/data/lung1_image.nrrd

Usage::

    python benchmarks/cost_curve.py --source /tmp/pr/pyradiomics-3.0.1/data/lung1_image.nrrd \\
        --methods bspline --sizes 2,20,157,500 --out results.md [--compare-sitk]

``--compare-sitk`` also times the resampling step alone, SimpleITK against the one-axis path,
back to back on the 512×512×120 → ×5 case (fair on a shared machine).
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

FACTOR = 5
IN_PLANE = 512


def case_shape(million_out: float) -> tuple[int, int, int]:
    """Input shape whose ×5 output has about ``million_out`` million voxels.

    512×512 in-plane with at least 8 slices; smaller outputs crop in-plane (24 slices).
    """
    target = million_out * 1e6 / FACTOR
    nz = round(target / IN_PLANE**2)
    if nz >= 8:
        return IN_PLANE, IN_PLANE, nz
    side = min(IN_PLANE, max(8, round(math.sqrt(target / 24))))
    return side, side, 24


def build_input(source: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int],
                path: Path) -> None:
    """Centre crop in-plane, mirror-tile along z, write as int16 NIfTI."""
    x0 = (source.shape[0] - shape[0]) // 2
    y0 = (source.shape[1] - shape[1]) // 2
    crop = source[x0:x0 + shape[0], y0:y0 + shape[1]]
    reps = -(-shape[2] // crop.shape[2])
    tiles = [crop if i % 2 == 0 else crop[:, :, ::-1] for i in range(reps)]
    data = np.concatenate(tiles, axis=2)[:, :, :shape[2]]
    img = nib.Nifti1Image(np.ascontiguousarray(data).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def run_case(inp: Path, out: Path, method: str, extra: list[str], timeout: float) -> dict:
    """One fresh ``medsr upscale`` process; wall time and that child's peak RSS."""
    cmd = [sys.executable, "-m", "medsr", "upscale", str(inp), "--scale", "1", "1",
           str(FACTOR), "--method", method, "-o", str(out), "--force", *extra]
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "rc": proc.returncode,
            "log_tail": tail if proc.returncode else ""}


def modelled_peak(shape: tuple[int, int, int], method: str, uncertainty: bool = False,
                  limit_bytes: int | None = None) -> int:
    """Peak memory of a ×5 request by the memory plan of ``medsr upscale``
    (:func:`medsr.upscaling.plan_memory`; int16 NIfTI in and out, CT)."""
    from medsr.methods import make_upscaler
    from medsr.upscaling import plan_memory

    affine = np.diag([0.57, 0.57, 5.0, 1.0])
    up = make_upscaler(shape, affine, method=method, scale=(1, 1, FACTOR), modality="CT",
                       device="cpu")
    return plan_memory((1, *shape), up, in_dtype="int16", uncertainty=uncertainty,
                       limit_bytes=limit_bytes).peak_bytes


def largest_fitting(limit: int, method: str) -> tuple[tuple[int, int, int], int]:
    """Largest 512×512×nz ×5 request whose modelled peak fits ``limit`` (bisection on nz)."""
    def peak(nz: int) -> int:
        return modelled_peak((IN_PLANE, IN_PLANE, nz), method, limit_bytes=limit)

    lo, hi = 2, 4  # a learned request needs two slices (one is upscaled in-plane only)
    while peak(hi) <= limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if peak(mid) <= limit else (lo, mid)
    return (IN_PLANE, IN_PLANE, lo), peak(lo)


def compare_sitk(source: np.ndarray, repeats: int = 2) -> dict:
    """Resampling step alone on 512×512×120 → ×5: SimpleITK and the one-axis path, alternated."""
    from medsr.resample import resample_index_space, resample_sitk

    data = np.concatenate([source, source[:, :, ::-1], source], axis=2)[:, :, :120]
    data = np.ascontiguousarray(data, dtype=np.float32)
    shape = (data.shape[0], data.shape[1], data.shape[2] * FACTOR)
    ratio = [1.0, 1.0, 1.0 / FACTOR]
    offset = [0.0, 0.0, (1.0 / FACTOR - 1.0) / 2.0]
    times: dict[str, list[float]] = {"sitk": [], "fast": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        ref = resample_sitk(data, shape, ratio, offset, "bspline", None)
        t1 = time.perf_counter()
        got = resample_index_space(data, shape, ratio, offset, "bspline")
        t2 = time.perf_counter()
        times["sitk"].append(t1 - t0)
        times["fast"].append(t2 - t1)
        err = float(np.abs(ref - got).max() / (data.max() - data.min()))
        del ref, got
    return {"sitk_s": min(times["sitk"]), "fast_s": min(times["fast"]),
            "ratio": min(times["sitk"]) / min(times["fast"]), "max_rel_diff": err,
            "all": times}


def max_memory(cli_args: list[str]) -> int | None:
    """The ``--max-memory`` limit among ``medsr upscale`` arguments, in bytes."""
    from medsr.memory import GiB

    if "--max-memory" not in cli_args:
        return None
    return int(float(cli_args[cli_args.index("--max-memory") + 1]) * GiB)


def gpu_name() -> str | None:
    """The CUDA device a ``medsr upscale`` child would use, if any."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a CT volume (NRRD, NIfTI)")
    parser.add_argument("--methods", nargs="+", default=["bspline"],
                        help="upscale methods, e.g. bspline default self-supervised")
    parser.add_argument("--sizes", default="2,20,157,500",
                        help="output sizes in million voxels (comma-separated)")
    parser.add_argument("--budget-gib", type=float, default=8.0,
                        help="memory budget for the 'largest output that fits' line")
    parser.add_argument("--cli-args", default="", help="extra arguments for medsr upscale")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    parser.add_argument("--compare-sitk", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("results.md"))
    parser.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    args = parser.parse_args()

    import medsr
    from medsr.io import volume_parts
    from medsr.memory import GiB, format_bytes

    source, affine, _ = volume_parts(medsr.load_volume(args.source))
    extra = shlex.split(args.cli_args)
    sizes = [float(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medsr_cost_"))
    if not args.workdir:  # a scratch folder of several GB: removed at exit, pass or fail
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "processor": platform.processor() or platform.machine(),
                           "gpu": gpu_name(), "load_before": load_average()},
               "source": str(args.source), "factor": FACTOR, "cases": []}
    rows = []
    print(f"load average {load_average()}", flush=True)
    for size in sizes:
        shape = case_shape(size)
        out_shape = (shape[0], shape[1], shape[2] * FACTOR)
        inp = work / f"in_{'x'.join(map(str, shape))}.nii.gz"
        if not inp.exists():
            build_input(source, affine, shape, inp)
        for method in args.methods:
            load = load_average()
            r = run_case(inp, work / "out.nii.gz", method, extra, args.timeout)
            (work / "out.nii.gz").unlink(missing_ok=True)
            model = modelled_peak(shape, method, "--uncertainty" in extra, max_memory(extra))
            case = {"method": method, "in_shape": shape, "out_shape": out_shape,
                    "out_mvoxels": math.prod(out_shape) / 1e6, "model_peak_bytes": model,
                    "load_avg_before": load, **r}
            results["cases"].append(case)
            ok = "" if r["rc"] == 0 else f" (exit {r['rc']})"
            rows.append(f"| {method} | {'×'.join(map(str, shape))} | "
                        f"{'×'.join(map(str, out_shape))} | {case['out_mvoxels']:.0f} | "
                        f"{r['wall_s']:.1f}{ok} | {format_bytes(r['peak_rss_bytes'])} | "
                        f"{format_bytes(model) if model else '—'} | {load.split()[0]} |")
            print(rows[-1], flush=True)
            if r["rc"]:
                print(r["log_tail"], file=sys.stderr)
            # saved after every case, so a run stopped early keeps what it measured
            (args.json or args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))

    limit = int(args.budget_gib * GiB)
    lines = ["| method | input | output | Mvoxels out | wall s | peak RSS | model peak | load |",
             "|---|---|---|---|---|---|---|---|", *rows, ""]
    results["largest_fitting"] = {}
    for method in ("bspline", "default"):
        fit_shape, fit_peak = largest_fitting(limit, method)
        fit_out = (fit_shape[0], fit_shape[1], fit_shape[2] * FACTOR)
        results["largest_fitting"][method] = {"budget_bytes": limit, "in_shape": fit_shape,
                                              "out_shape": fit_out, "model_peak_bytes": fit_peak}
        lines.append(f"Largest {method} ×{FACTOR} output within {args.budget_gib:g} GiB (memory "
                     f"model): {'×'.join(map(str, fit_out))} ({math.prod(fit_out) / 1e6:.0f} M "
                     f"voxels, model peak {format_bytes(fit_peak)}).")
    measured = [c for c in results["cases"] if c["rc"] == 0]
    check = max(measured, key=lambda c: c["out_mvoxels"]) if measured else None
    if check:
        err = check["model_peak_bytes"] / check["peak_rss_bytes"] - 1
        lines.append(f"Model check at the largest measured point "
                     f"({'×'.join(map(str, check['out_shape']))}): model "
                     f"{format_bytes(check['model_peak_bytes'])}, measured "
                     f"{format_bytes(check['peak_rss_bytes'])} ({err:+.1%}).")
        results["model_check"] = {"out_shape": check["out_shape"], "relative_error": err}
    if args.compare_sitk:
        print("timing SimpleITK against the one-axis path ...", flush=True)
        cmp = compare_sitk(source)
        cmp["load_avg"] = load_average()
        results["compare_sitk"] = cmp
        lines.append(f"Resampling step alone, 512×512×120 → ×{FACTOR}, back to back: SimpleITK "
                     f"{cmp['sitk_s']:.1f} s, one-axis path {cmp['fast_s']:.2f} s "
                     f"(×{cmp['ratio']:.0f}; max difference {cmp['max_rel_diff']:.1e} of the "
                     f"range; load {cmp['load_avg']}).")
    results["machine"]["load_after"] = load_average()
    gpu = results["machine"]["gpu"]
    lines.append(f"Machine: {os.cpu_count()} CPUs ({results['machine']['processor']})"
                 + (f", GPU {gpu}" if gpu else ", no GPU") + ", load "
                 f"average {results['machine']['load_before']} before, "
                 f"{results['machine']['load_after']} after.")
    args.out.write_text("\n".join(lines) + "\n")
    (args.json or args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print("\n".join(lines[len(rows) + 2:]))


if __name__ == "__main__":
    main()
