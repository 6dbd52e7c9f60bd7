"""Background skipping (``medsr/background.py``): its share, its time and its error per scan.

For each scan the default model of its modality upscales it ×``--factor`` along one axis,
the lever off and on (``ModelUpscaler.skip_background``):

- **share**: the lines along the axis that take B-spline's values (background), and the share
  of the plane networks' rows still computed (each batch of planes runs the span of its body
  rows widened by the network's reach);
- **time**: the plane networks alone (``up.predict`` on the whole volume, both views), in this
  process, off and on alternating, ``--repeats`` each after a warm-up; medians of wall and of
  the process's CPU time (less sensitive to a loaded machine than whole-process times,
  ``benchmarks/speed_table.py``);
- **error**: a whole run (``medsr.upscaling.run``: self-check, consistency) off and on; the
  body lines must be equal bit for bit; outside them the RMS and largest |on - off| against
  the scan's noise sd; with a thin truth, PSNR (range of the truth) in the body lines and
  outside, off and on.

``--thin LABEL=PATH[@AXIS]`` makes a thick scan by averaging ``--factor`` slices along AXIS
(default 2; the thin scan is the truth); ``--scan LABEL=PATH[@AXIS]`` takes a thick scan as it
is (no truth). ``--slices N`` keeps the N central slices along the axis first.

Usage::

    python benchmarks/background_eval.py --thin ct36=DATA/holdout_extra/invesalius_ct_head.nii.gz \\
        --thin colin=DATA/holdout/colin27_t1.nii.gz --scan lung2=DATA/holdout/lung2_image.nrrd \\
        [--factor 3] [--repeats 3] [--name cpu] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def load(item: str, factor: int, thin: bool, slices: int | None):
    """``(label, thick array, affine, truth or None, axis, modality)``."""
    import medsr
    from bspline_reference import slab_average
    from medsr.io import volume_parts
    from medsr.transforms.intensity import guess_modality

    label, rest = item.split("=", 1)
    path, axis = (rest.rsplit("@", 1) if "@" in rest else (rest, "2"))
    axis = int(axis)
    array, affine, source = volume_parts(medsr.load_volume(path))
    array = np.asarray(array[0] if array.ndim == 4 else array, dtype=np.float32)
    if slices:
        n = array.shape[axis]
        start = max(0, (n - slices) // 2)
        array = np.take(array, np.arange(start, min(n, start + slices)), axis=axis)
    modality = (source.modality or guess_modality(array)).upper()
    truth = None
    if thin:
        array, affine, truth = slab_average(array, affine, axis, factor)
        array = array.astype(np.float32)
    return label, array, affine, truth, axis, modality


def rows_share(up, array: np.ndarray) -> float:
    """Share of the plane networks' rows computed with the lever (batch spans)."""
    from medsr.background import body_rows
    from medsr.inference import _plane_batch

    body = body_rows(array, up.axis, up.background)
    done = total = 0
    for stack, view in body.views.items():
        height = view.shape[1]
        batch = _plane_batch(up.net, height * array.shape[up.axis] * up.factor)
        for start in range(0, view.shape[0], batch):
            stop = min(view.shape[0], start + batch)
            lo, hi = body.crop(stack, start, stop)
            done += (hi - lo) * (stop - start)
            total += height * (stop - start)
    return done / total


def psnr(x: np.ndarray, y: np.ndarray, peak: float) -> float:
    mse = float(np.mean(np.square(x.astype(np.float64) - y)))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def evaluate(label, array, affine, truth, axis, modality, factor, repeats) -> dict:
    from medsr.background import body_rows
    from medsr.methods import make_upscaler
    from medsr.noise import scan_noise
    from medsr.upscaling import run

    scale = [1, 1, 1]
    scale[axis] = factor

    def upscaler(skip: bool):
        up = make_upscaler(array.shape, affine, method="default", scale=scale,
                           modality=modality)
        up.skip_background = skip
        return up

    up = upscaler(True)
    up.noise_sd = scan_noise(up, array)
    up.prepare(array)
    bg = up.background
    row = {"scan": label, "shape": list(array.shape), "axis": axis, "modality": modality,
           "factor": factor, "noise_sd": round(float(up.noise_sd), 3),
           "threshold": None if bg is None else round(bg.threshold, 3)}
    if bg is None:
        return row
    lines = body_rows(array, axis, bg).views[min(a for a in range(3) if a != axis)]
    row["background_lines"] = round(1.0 - float(lines.mean()), 4)
    row["rows_computed"] = round(rows_share(up, array), 4)
    times = {False: [], True: []}
    cpu = {False: [], True: []}
    up.predict(array)  # warm-up: sessions, caches
    for _ in range(repeats):
        for skip in (False, True):
            up.background = bg if skip else None
            start, start_cpu = time.perf_counter(), time.process_time()
            up.predict(array)
            times[skip].append(time.perf_counter() - start)
            cpu[skip].append(time.process_time() - start_cpu)
    for key, values in (("networks_s", times), ("networks_cpu_s", cpu)):
        row[f"{key}_off"] = [round(t, 2) for t in values[False]]
        row[f"{key}_on"] = [round(t, 2) for t in values[True]]
        off, on = (statistics.median(values[k]) for k in (False, True))
        row[f"{key.replace('_s', '')}_saving"] = round(1.0 - on / off, 3)
    outs = {}
    for skip in (False, True):
        out, _, _ = run(array[None], upscaler(skip))
        outs[skip] = out[0]
    body = np.broadcast_to(np.expand_dims(lines, axis), outs[True].shape)
    row["body_bit_for_bit"] = bool(np.array_equal(outs[True][body], outs[False][body]))
    diff = (outs[True] - outs[False])[~body]
    if diff.size:
        row["outside_rms_diff"] = round(float(np.sqrt(np.mean(np.square(diff)))), 3)
        row["outside_max_diff"] = round(float(np.abs(diff).max()), 3)
    if truth is not None:
        peak = float(truth.max() - truth.min())
        whole = np.ones(body.shape, dtype=bool)
        for name, mask in (("body", body), ("outside", ~body), ("whole", whole)):
            if mask.any():
                for skip in (False, True):
                    row[f"psnr_{name}_{'on' if skip else 'off'}"] = round(
                        psnr(outs[skip][mask], truth[mask], peak), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thin", action="append", default=[], metavar="LABEL=PATH[@AXIS]")
    parser.add_argument("--scan", action="append", default=[], metavar="LABEL=PATH[@AXIS]")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = []
    for item, thin in [(s, True) for s in args.thin] + [(s, False) for s in args.scan]:
        load_before = round(os.getloadavg()[0], 2)
        row = evaluate(*load(item, args.factor, thin, args.slices), args.factor, args.repeats)
        row["load_1min"] = [load_before, round(os.getloadavg()[0], 2)]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"background_eval_{args.name}.json").write_text(json.dumps(rows, indent=1))
    lines = ["| scan | background lines | rows computed | networks off → on s (saving; CPU) | "
             "body bit for bit | outside RMS / max diff (noise sd) | PSNR body off/on | "
             "PSNR outside off/on | load |", "| --- " * 9 + "|"]
    for r in rows:
        if r.get("threshold") is None:
            lines.append(f"| {r['scan']} | lever off (no background rule) |" + " |" * 7)
            continue
        off, on = (statistics.median(r[k]) for k in ("networks_s_off", "networks_s_on"))
        lines.append(
            f"| {r['scan']} {'×'.join(map(str, r['shape']))} | {r['background_lines']:.0%} | "
            f"{r['rows_computed']:.0%} | {off:.2f} → {on:.2f} ({r['networks_saving']:+.0%}; "
            f"{r.get('networks_cpu_saving', float('nan')):+.0%}) | "
            f"{r['body_bit_for_bit']} | {r.get('outside_rms_diff', 0):.2f} / "
            f"{r.get('outside_max_diff', 0):.1f} ({r['noise_sd']:.2f}) | "
            f"{r.get('psnr_body_off', float('nan')):.2f} / "
            f"{r.get('psnr_body_on', float('nan')):.2f} | "
            f"{r.get('psnr_outside_off', float('nan')):.2f} / "
            f"{r.get('psnr_outside_on', float('nan')):.2f} | {r['load_1min']} |")
    table = "\n".join(lines) + "\n"
    (args.out / f"background_eval_{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
