"""The speed table: whole-process wall times of what users run, start-up included.

Every row is a fresh process (``python -m medsr ...``, or the hand-written SimpleITK script
``benchmarks/sitk_bspline_script.py`` as the reference), run ``--repeats`` times; the table
gives the median wall time, the median CPU time (user + sys of the process and its children)
and the machine's load average before each row, so numbers from a busy shared machine can be
read for what they are. The machine (CPU model, cores) heads the table.

Inputs are thick-slice scans given as ``LABEL=PATH`` (``--scan``; a 4D series gets no script
row, as the script resamples 3D images; nor does ``--inplane``, which times in-plane requests
×``--factor`` on the first two axes); ``--thin LABEL=PATH`` makes one from a thin-slice
scan by averaging ``--factor`` slices along the last axis (as
``benchmarks/bspline_reference.py``), so 256×256×108 head CT becomes the 256×256×36 CT ×3,
and the thin scan is then the truth: each method's output is scored against it after the
timings (volume PSNR with ``medsr evaluate``'s defaults, and the difference to B-spline).
Learned rows also give the plane views the default model runs and the scan's background share:
the lines along the upscaled axis that the default model leaves to B-spline
(``medsr/background.py``; this checkout's rule, whatever ``--code`` runs). ``--code`` a checkout with ``skip_background`` defaulting to False times the
lever off (``benchmarks/background_eval.py`` times the networks alone, off and on).

Usage::

    python benchmarks/speed_table.py \\
        --thin ct36=/work/data/holdout_extra/invesalius_ct_head.nii.gz \\
        [--scan LABEL=PATH ...] [--factor 3] [--repeats 3] \\
        [--methods bspline,default,self-supervised] \\
        [--model LABEL=DIR ...] [--code DIR] [--extra ARGS] [--name cpu] \\
        [--out benchmarks/results]

``--code DIR`` runs another checkout's medsr (its folder goes first on ``PYTHONPATH``), to
measure before and after on the same machine; ``--extra "--precision fp32"`` times OpenVINO in
float32. The learned rows' engine and arithmetic (``engine_note``) head the table.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # this checkout's medsr for making and scoring inputs


def engine_note(env: dict, extra: list[str]) -> str:
    """Which CPU engine and arithmetic the learned rows run with (the code under ``env``):
    ``onnx fp32`` (ONNX Runtime; any checkout before OpenVINO), ``openvino bf16`` or
    ``openvino fp32`` (``--precision``, else ``MEDSR_PRECISION``, else the CPU's default)."""
    env = dict(env)
    if "--precision" in extra:
        env["MEDSR_PRECISION"] = extra[extra.index("--precision") + 1]
    code = ("from medsr import runtime\n"
            "kind = runtime.engine('auto') if hasattr(runtime, 'engine') else 'onnx'\n"
            "prec = 'fp32'\n"
            "if kind == 'openvino' and runtime.precision() == 'auto':\n"
            "    prec = 'bf16' if runtime.native_bf16() else 'fp32'\n"
            "print(kind, prec)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())  # not this checkout
    return done.stdout.strip() or "unknown"


def machine() -> dict:
    """CPU model, cores, Python and the load average now."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=False)
        gpu = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "load": _load()}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_runs(command: list[str], repeats: int, env: dict, cwd: Path) -> dict:
    """Median wall and CPU seconds of ``repeats`` fresh processes; the load before each."""
    walls, cpus, loads = [], [], []
    for _ in range(repeats):
        loads.append(_load()[0])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd,
                              check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return {"wall_s": round(statistics.median(walls), 3),
            "cpu_s": round(statistics.median(cpus), 3),
            "runs_wall_s": [round(w, 3) for w in walls], "load_1min": loads, "last_line": last}


def make_thick(thin: Path, factor: int, out: Path) -> tuple[Path, Path]:
    """A thick-slice copy of ``thin`` (``factor`` slices averaged along the last axis) and
    the truth: ``thin`` itself, or its first whole multiple of ``factor`` slices (beside
    ``out``) when the count is not one."""
    import numpy as np
    from bspline_reference import slab_average

    import medsr
    from medsr.io import SourceInfo, make_volume, volume_parts

    array, affine, source = volume_parts(medsr.load_volume(thin))
    thick, thick_affine, cropped = slab_average(array, affine, 2, factor)
    dtype = source.dtype if source.dtype.startswith("int") else "float32"
    medsr.save_volume(make_volume(np.round(thick) if dtype != "float32" else thick,
                                  thick_affine, SourceInfo("nifti", "", dtype)), out, force=True)
    if cropped.shape == array.shape:
        return out, thin
    truth = out.with_name(out.name.replace(".nii.gz", "_truth.nii.gz"))
    medsr.save_volume(make_volume(cropped, affine, SourceInfo("nifti", "", "float32")), truth,
                      force=True)
    return out, truth


def learned_facts(path: Path, factor: int) -> dict:
    """What the default model does with the scan: ``background``, the share of the lines along
    the last axis that it would leave to B-spline (``medsr/background.py``; ``None`` where the
    rule does not apply), and ``views``, the plane views it runs (the card's ``"views"``: the
    planes through each fine in-plane axis, or one)."""
    import medsr
    from medsr.background import body_rows, plan
    from medsr.io import volume_frames
    from medsr.methods import make_upscaler
    from medsr.noise import scan_noise
    from medsr.transforms.intensity import guess_modality

    frames, affine, source = volume_frames(medsr.load_volume(path))
    volume = frames[0]  # a series: its first volume
    modality = (source.modality or guess_modality(volume)).upper()
    up = make_upscaler(volume.shape, affine, method="default", scale=(1, 1, factor),
                       modality=modality)
    bg = plan(volume, 2, up.net, up.card, scan_noise(up, volume))
    share = None if bg is None else round(1.0 - float(body_rows(volume, 2, bg).views[0].mean()), 4)
    fine = sum(1 for n in volume.shape[:2] if n > 1)
    return {"background": share, "views": fine if up.card.get("views", "both") == "both"
            else min(1, fine)}


def score(rows: list[dict], truths: dict[str, Path]) -> None:
    """Volume PSNR of each output against its thin truth, and its difference to B-spline."""
    from medsr.evaluation import evaluate

    for r in rows:
        truth = truths.get(r.get("label", ""))
        if truth is not None and Path(r["output"]).exists():
            r["psnr"] = round(float(evaluate(r["output"], truth).psnr), 3)
    for r in rows:
        base = [b["psnr"] for b in rows if b.get("label") == r.get("label")
                and b["what"].endswith("bspline") and "psnr" in b]
        if "psnr" in r and base:
            r["gain_db"] = round(r["psnr"] - base[0], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", action="append", default=[], metavar="LABEL=PATH",
                        help="a thick-slice scan to upscale (repeatable)")
    parser.add_argument("--thin", action="append", default=[], metavar="LABEL=PATH",
                        help="a thin-slice scan made thick by --factor first (repeatable)")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--inplane", action="store_true",
                        help="upscale the first two axes of each --scan ×--factor (an in-plane "
                             "request) instead of the last; no SimpleITK row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="bspline,default,self-supervised")
    parser.add_argument("--selfsup-repeats", type=int, default=None,
                        help="runs of the self-supervised rows (default --repeats)")
    parser.add_argument("--extra", default="", help="more arguments for every upscale")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=DIR",
                        help="also time `--model DIR` (a student beside its teacher, the "
                             "default model)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the medsr checkout to run (default: this one)")
    parser.add_argument("--name", default="cpu", help="tag in the output file names")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(args.code.resolve()), os.environ.get("PYTHONPATH", "")])}
    work = Path(tempfile.mkdtemp(prefix="medsr_speed_"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # scans and outputs: ~0.2 GB
    scans, truths = [], {}
    for item in args.thin:
        label, path = item.split("=", 1)
        thick, truths[label] = make_thick(Path(path), args.factor, work / f"{label}.nii.gz")
        scans.append((label, thick))
    for item in args.scan:
        label, path = item.split("=", 1)
        scans.append((label, Path(path)))
    if not scans:
        parser.error("give at least one --scan or --thin")
    if args.inplane and args.thin:
        parser.error("--inplane times --scan inputs only (--thin makes slices thick)")

    py = [sys.executable]
    medsr = [*py, "-m", "medsr"]
    rows = []

    def row(what: str, scan: str, command: list[str], repeats: int | None = None) -> None:
        result = timed_runs(command, repeats or args.repeats, env, work)  # not this checkout
        rows.append({"what": what, "scan": scan, **result})
        print(f"{what:>34} {scan:>22}: {result['wall_s']:7.2f} s wall, "
              f"{result['cpu_s']:7.2f} s CPU (load {result['load_1min']})", flush=True)

    info = machine()
    extra = args.extra.split()
    engine = engine_note(env, extra)
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load']}; code {args.code}; "
          f"plane networks: {engine}")
    row("medsr --help", "", [*medsr, "--help"])
    first = scans[0][1]
    row("medsr info", first.name, [*medsr, "info", str(first)])
    f = str(args.factor)
    scale = ["--scale", f, f, "1"] if args.inplane else ["--scale", "1", "1", f]
    for label, path in scans:
        import nibabel as nib

        dims = nib.load(str(path)).shape if path.name.endswith((".nii", ".nii.gz")) else ()
        series = len(dims) > 3 and dims[3] > 1  # a 4D series: the script resamples 3D only
        shape = ("×".join(map(str, dims[:3])) + (f" × {dims[3]} volumes" if series else "")
                 if dims else label)
        name = f"{label} {shape} " + (f"in-plane ×{args.factor}" if args.inplane
                                      else f"×{args.factor}")
        out = work / f"{label}_sitk.nii.gz"
        if not series and not args.inplane:
            row("SimpleITK script (reference)", name,
                [*py, str(HERE / "sitk_bspline_script.py"), str(path), str(out),
                 "--factor", str(args.factor)])
            rows[-1]["output"], rows[-1]["label"] = str(out), label
        for method in args.methods.split(","):
            repeats = args.selfsup_repeats if method == "self-supervised" else None
            out = work / f"{label}_{method}.nii.gz"
            row(f"medsr upscale --method {method}", name,
                [*medsr, "upscale", str(path), "-o", str(out), *scale, "--method", method,
                 "--force", *extra], repeats)
            rows[-1]["output"], rows[-1]["label"] = str(out), label
        for item in args.model:
            tag, folder = item.split("=", 1)
            out = work / f"{label}_model_{tag}.nii.gz"
            row(f"medsr upscale --model {tag}", name,
                [*medsr, "upscale", str(path), "-o", str(out), *scale, "--model", folder,
                 "--force", *extra])
            rows[-1]["output"], rows[-1]["label"] = str(out), label
    score(rows, truths)
    facts = {} if args.inplane else {label: learned_facts(path, args.factor)
                                     for label, path in scans}
    for r in rows:
        if r.get("label") in facts and "--method" in r["what"] and "bspline" not in r["what"]:
            r.update(facts[r["label"]])
    result = {"machine": info, "load_after": _load(), "code": str(args.code), "engine": engine,
              "extra": args.extra,
              "repeats": args.repeats, "factor": args.factor, "inplane": args.inplane,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"speed_table_{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    head = (f"Machine: {info['cpu']}, {info['cores']} cores"
            + (f", {info['gpu']}" if info["gpu"] else "")
            + f"; load average before {info['load']}, after {result['load_after']}; "
            f"medians of {args.repeats} whole-process runs (start-up included); plane networks "
            f"in {engine}" + (f"; every upscale with `{args.extra}`" if args.extra else "") + ".")
    lines = [head, "",
             ("| what | scan | wall s (median) | CPU s | PSNR vs truth (Δ B-spline) dB | "
              "background (B-spline lines) | plane views | load (1 min) before each run |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        quality = (f"{r['psnr']:.2f}" + (f" ({r['gain_db']:+.2f})" if "gain_db" in r else "")
                   if "psnr" in r else "")
        share = f"{r['background']:.0%}" if r.get("background") is not None else ""
        lines.append(f"| {r['what']} | {r['scan']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{quality} | {share} | {r.get('views', '')} | "
                     f"{', '.join(f'{x:.1f}' for x in r['load_1min'])} |")
    table = "\n".join(lines) + "\n"
    (args.out / f"speed_table_{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
