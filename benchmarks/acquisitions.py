"""Learned methods against B-spline under acquisitions unlike the box profile: thin real scans
held out of training are degraded ×``factor`` along ``axis`` as four kinds of thick slices are
made, and upscaled back by each method with no hint about how (and, where it differs from the
default, with the right ``slice_thickness``/``slice_profile`` hint too):

- ``clean``: contiguous slices, a box as wide as the spacing;
- ``gaussian``: a Gaussian profile whose FWHM is the spacing;
- ``gaps``: slices two thirds of the spacing thick (2 mm every 3 mm at ×3 of 1 mm);
- ``noise``: ``clean`` plus noise on the thick slices: Rician σ = 3 % of the maximum for MR,
  Gaussian σ = 20 HU for CT;
- ``jpeg2000-R`` (asked for by name): ``clean`` with every thick slice through lossy JPEG 2000
  at R:1, as an archive keeps a lossily compressed series.

PSNR over the volume against the thin truth (data range of the truth), SSIM over slices, MAE
inside the body (:func:`medsr.evaluation.evaluate`); the consistency residual against the
measured noise for learned methods. ``--series`` degrades every volume of a 4D series (EPI)
and upscales the series as one input, so the noise can be read from its volumes' difference;
the first volume is scored. ``--cross`` scores the second volume's output against the first
volume's truth instead: the truth's noise is then independent of the input's, as it is
between a thin and a thick acquisition (scored against its own volume, the thick slices are
averages of the truth's very noise, which rewards copying noise over removing it).

Usage::

    python benchmarks/acquisitions.py data/holdout/colin27_t1.nii.gz:2 \\
        data/holdout/brain2_image.nrrd:0 --factors 3 --methods default,self-supervised \\
        --name acquisitions_mr
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ACQUISITIONS = ("clean", "gaussian", "gaps", "noise")


def jpeg2000(low: np.ndarray, ratio: float, offset: float) -> np.ndarray:
    """A 2D slice (scan units) through lossy JPEG 2000 at ``ratio``:1 of its own bit depth, as
    an archive keeps it (OpenJPEG, the library of the ``medsr[dicom]`` decoder)."""
    import openjpeg

    stored = np.clip(np.rint(low + offset), 0, 65535).astype(np.uint16)
    decoded = openjpeg.decode(openjpeg.encode(stored, compression_ratios=[float(ratio)]))
    return decoded.astype(np.float32) - offset


def degrade(truth, axis: int, factor: int, acquisition: str, modality: str, seed: int = 0):
    """The thick-slice copy of ``truth`` and the hint that describes it (or ``None``)."""
    import torch

    from medsr.transforms.degrade import add_noise, simulate_thick_slices

    if acquisition.startswith("jpeg2000-"):  # contiguous slices, each compressed
        low = simulate_thick_slices(truth, axis, factor)
        array = low[0].numpy()
        offset = 4096.0 if modality == "CT" else 0.0
        for k in range(array.shape[axis]):
            where = (slice(None),) * axis + (k,)
            array[where] = jpeg2000(np.ascontiguousarray(array[where]),
                                    float(acquisition.split("-", 1)[1]), offset)
        low[0] = torch.from_numpy(array)
        return low, None

    if acquisition == "gaussian":
        return simulate_thick_slices(truth, axis, factor, factor, "gaussian"), \
            {"slice_profile": "gaussian"}
    if acquisition == "gaps":
        thickness = 2 * factor / 3
        spacing = float(np.linalg.norm(np.asarray(truth.affine)[:3, axis])) * factor
        return simulate_thick_slices(truth, axis, factor, thickness, "box"), \
            {"slice_thickness": spacing * 2 / 3}
    low = simulate_thick_slices(truth, axis, factor)
    if acquisition == "noise":
        sigma = 20.0 if modality == "CT" else 0.03 * float(truth.max())
        low = add_noise(low, sigma, rician=modality != "CT",
                        generator=torch.Generator().manual_seed(seed))
    return low, None


def run_case(path: Path, axis: int, factor: int, acquisition: str, methods: list[str],
             options: dict, hints: list[str], auto_profile: bool = False,
             series: bool = False, cross: bool = False) -> list[dict]:
    import medsr
    from medsr.evaluation import evaluate
    from medsr.io import load_volume, make_volume, volume_frames, volume_parts
    from medsr.transforms.intensity import guess_modality

    volume = load_volume(path)
    frames, affine, source = volume_frames(volume)
    array = frames[0]  # a 4D series (EPI): its first volume is scored
    modality = (source.modality or guess_modality(array)).upper()
    keep = array.shape[axis] // factor * factor

    def whole_slabs(a):  # a volume cropped to whole thick slices
        return make_volume(np.take(a, np.arange(keep), axis=axis), affine, source)

    truth = whole_slabs(array)
    low, hint = degrade(truth, axis, factor, acquisition, modality)
    series = series and len(frames) > 1
    if series:  # every volume degraded alike (its own noise), upscaled as one series
        lows = [low] + [degrade(whole_slabs(a), axis, factor, acquisition, modality, seed=i)[0]
                        for i, a in enumerate(frames) if i > 0]
        low_frames = np.stack([volume_parts(v)[0] for v in lows])
        low = make_volume(low_frames, np.asarray(lows[0].affine), volume_parts(lows[0])[2])
    scale = [1, 1, 1]
    scale[axis] = factor
    rows = []
    base = None
    runs = [("bspline", None)] + [(m, None) for m in methods]
    if hint is not None:
        runs += [(m, hint) for m in hints]
    if auto_profile and acquisition != "noise":
        runs += [(m, {"slice_profile": "auto"}) for m in hints]
    for name, given in runs:
        t0 = time.perf_counter()
        kwargs = dict(options.get(name, {}))
        if given:
            kwargs.update(given)
        if name.startswith("model="):  # a candidate model folder
            kwargs["model"] = name.split("=", 1)[1]
        else:
            kwargs["method"] = name
        try:
            pred = medsr.upscale(low, scale, modality=modality, **kwargs)
        except medsr.MedsrError as err:  # e.g. self-supervised SR without a fine plane
            print(f"{path.name} ax{axis} x{factor} {acquisition} {name}: {err}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        meta = pred.meta
        if series:  # cross: the second volume's output against the first's truth
            pred = make_volume(volume_frames(pred)[0][int(cross)], np.asarray(pred.affine),
                               source)
        # SSIM per slice along the thick axis, unless those slices are too small for its
        # window (a 10-slice EPI): then along the axis with the largest slices
        shape = np.asarray(truth).shape[-3:]
        small = min(s for a, s in enumerate(shape) if a != axis) < 11
        r = evaluate(pred, truth, axis=int(np.argmin(shape)) if small else axis)
        if name == "bspline":
            base = r
        row = {"scan": path.name + (" (series, cross)" if series and cross else
                                    " (series)" if series else ""), "modality": modality,
               "axis": axis, "factor": factor, "acquisition": acquisition, "method": name,
               "hint": given,
               "psnr": r.psnr, "ssim": r.ssim, "mae": r.mae,
               "gain_db": r.psnr - base.psnr, "ssim_gain": r.ssim - base.ssim,
               "profile": meta.get("medsr_slice_profile"),
               "noise_sd": meta.get("medsr_noise_sd"),
               "residual_sd": meta.get("medsr_consistency_residual_sd"),
               "selfcheck": meta.get("medsr_selfcheck"),
               "self_supervised": meta.get("medsr_self_supervised"),
               "seconds": round(seconds, 1)}
        rows.append(row)
        print(f"{path.name} ax{axis} x{factor} {acquisition:<8} {name:<15} "
              f"{'hint' if given else '    '} PSNR {r.psnr:6.2f} ({row['gain_db']:+.2f}) "
              f"SSIM {r.ssim:.4f} ({row['ssim_gain']:+.4f}) MAE {r.mae:7.2f} "
              f"noise {row['noise_sd'] or 0:.3g} resid {row['residual_sd'] or 0:.3g} "
              f"{seconds:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| scan | ×f | acquisition | method | hint | profile used | PSNR (Δ B-spline) | "
             "SSIM (Δ) | MAE | residual / noise sd |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = (f"{r['residual_sd'] / r['noise_sd']:.2f}" if r["noise_sd"] and
                 r["residual_sd"] is not None else "–")
        hint = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in (r["hint"] or {}).items()) or "–"
        prof = r.get("profile")
        used = f"{prof['kind']} {prof['width']:.2f}" if prof else "–"
        lines.append(f"| {r['scan']} (axis {r['axis']}) | {r['factor']} | {r['acquisition']} "
                     f"| {r['method']} | {hint} | {used} | {r['psnr']:.2f} ({r['gain_db']:+.2f}) | "
                     f"{r['ssim']:.4f} ({r['ssim_gain']:+.4f}) | {r['mae']:.2f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", nargs="+", help="SCAN or SCAN:AXIS (default axis 2)")
    parser.add_argument("--factors", default="3")
    parser.add_argument("--acquisitions", default=",".join(ACQUISITIONS))
    parser.add_argument("--methods", default="default",
                        help="comma-separated: default, self-supervised, bspline, linear, "
                             "or model=DIR (a trained model folder)")
    parser.add_argument("--hint-methods", default="default",
                        help="methods also run with the right hint (and with --auto-profile); "
                             "empty: none")
    parser.add_argument("--auto-profile", action="store_true",
                        help="also run with --slice-profile auto (the profile it finds)")
    parser.add_argument("--cross", action="store_true",
                        help="with --series: score the second volume's output against the "
                             "first volume's truth, so the truth's noise is independent of "
                             "the input's (as in a real thick acquisition)")
    parser.add_argument("--series", action="store_true",
                        help="a 4D input: degrade and upscale all its volumes together")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="acquisitions")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    for spec in args.scans:
        path, _, axis = spec.partition(":")
        for f in (int(v) for v in args.factors.split(",")):
            for acquisition in args.acquisitions.split(","):
                rows += run_case(Path(path), int(axis or 2), f, acquisition,
                                 args.methods.split(","), {},
                                 [m for m in args.hint_methods.split(",") if m],
                                 args.auto_profile, args.series, args.cross)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_before": " ".join(f"{v:.2f}" for v in load),
                          "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())},
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str)
                                                + "\n")
    (args.out / f"{args.name}.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
