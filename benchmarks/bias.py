"""Bias that matters downstream: densities and volumes after SR, against the thin-slice truth.

A PSNR gain that shifts densities or tissue volumes is not a gain. Held-out thin real scans are
degraded with :func:`medsr.transforms.degrade.simulate_thick_slices` (box, ×``factor``, along
``axis``) and brought back by each method; then, each against the truth:

- CT: mean HU inside the truth's body (> −500 HU), soft tissue (−100..100), lung
  (−950..−500) and bone (> 300) masks (the region held fixed, so only the densities move), and
  the volume (mL) of voxels > 300 HU and < −500 HU thresholded on each image itself (what a
  downstream threshold measures).
- MR: three tissue classes from a 1D k-means on the truth's body voxels (body: above the
  truth's Otsu threshold); every image's body voxels (the truth's body mask) are assigned to
  the nearest truth centroid and the class volumes (mL) compared.

Usage::

    python benchmarks/bias.py data/holdout/colin27_t1.nii.gz \\
        data/holdout_extra/invesalius_ct_head.nii.gz data/holdout/lung2_image.nrrd:0 \\
        data/holdout/brain2_image.nrrd:0 --methods bspline,default[,self-supervised]

``SCAN:AXIS`` degrades another axis (0 for the 5–6.5 mm scans, whose thin truth is in-plane).
Writes ``bias.json`` and ``bias.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

CT_REGIONS = {"body": (-500.0, np.inf), "soft tissue": (-100.0, 100.0),
              "lung": (-950.0, -500.0), "bone": (300.0, np.inf)}
CT_VOLUMES = {"> 300 HU": (300.0, np.inf), "< -500 HU": (-np.inf, -500.0)}
MR_CLASSES = ("class 1 (dark)", "class 2", "class 3 (bright)")


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 100) -> np.ndarray:
    """Sorted centroids of a 1D k-means (Lloyd, started at the quantiles)."""
    values = np.asarray(values, dtype=np.float64)
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        edges = (centres[1:] + centres[:-1]) / 2
        label = np.searchsorted(edges, values)
        new = np.array([values[label == j].mean() if np.any(label == j) else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def ct_figures(image: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    out = {}
    for name, (lo, hi) in CT_REGIONS.items():
        mask = (truth > lo) & (truth < hi)
        out[f"mean HU {name}"] = float(image[mask].mean()) if mask.any() else None
    for name, (lo, hi) in CT_VOLUMES.items():
        out[f"mL {name}"] = float(np.count_nonzero((image > lo) & (image < hi)) * voxel_ml)
    return out


def mr_figures(image: np.ndarray, body: np.ndarray, centres: np.ndarray,
               voxel_ml: float) -> dict:
    edges = (centres[1:] + centres[:-1]) / 2
    label = np.searchsorted(edges, image[body])
    return {f"mL {name}": float(np.count_nonzero(label == j) * voxel_ml)
            for j, name in enumerate(MR_CLASSES)}


def measure(path: Path, axis: int, factor: int, methods: list[str], options: dict) -> dict:
    import medsr
    from medsr.errors import MedsrError
    from medsr.evaluation import evaluate
    from medsr.geometry import spacing
    from medsr.io import load_volume, make_volume, volume_parts
    from medsr.metrics import otsu_threshold
    from medsr.transforms.degrade import simulate_thick_slices
    from medsr.transforms.intensity import guess_modality

    array, affine, source = volume_parts(load_volume(path))
    modality = (source.modality or guess_modality(array)).upper()
    keep = array.shape[axis] // factor * factor
    truth_array = np.take(array, np.arange(keep), axis=axis)
    truth = make_volume(truth_array, affine, source)
    low = simulate_thick_slices(truth, axis, factor)
    voxel_ml = float(np.prod(spacing(affine))) / 1000.0
    scale = [1, 1, 1]
    scale[axis] = factor
    if modality == "CT":
        def figures(image):
            return ct_figures(image, truth_array, voxel_ml)
    else:
        body = truth_array > otsu_threshold(truth_array)
        centres = kmeans_1d(truth_array[body])

        def figures(image):
            return mr_figures(image, body, centres, voxel_ml)
    row = {"scan": path.name, "modality": modality, "axis": axis, "factor": factor,
           "spacing_mm": [round(float(s), 4) for s in spacing(affine)],
           "truth": figures(truth_array), "methods": {}}
    if modality != "CT":
        row["mr_centroids"] = [round(float(c), 3) for c in centres]
    for name in methods:
        t0 = time.perf_counter()
        try:
            pred = medsr.upscale(low, scale, method=name, **options.get(name, {}))
        except MedsrError as err:  # e.g. self-supervised without a high-resolution plane
            print(f"{path.name} axis {axis} x{factor} {name}: skipped ({err})", flush=True)
            continue
        seconds = time.perf_counter() - t0
        image = volume_parts(pred)[0]
        res = evaluate(pred, truth, axis=axis)
        entry = {"psnr": res.psnr, "ssim": res.ssim, "seconds": round(seconds, 1),
                 "figures": figures(image), "ran": pred.meta.get("medsr_method")}
        if "medsr_selfcheck" in pred.meta:
            entry["selfcheck"] = pred.meta["medsr_selfcheck"]
        row["methods"][name] = entry
        print(f"{path.name} axis {axis} x{factor} {name}: PSNR {res.psnr:.2f} dB, "
              f"{seconds:.0f} s", flush=True)
    return row


def _fmt(value: float | None, ref: float | None, unit: str) -> str:
    if value is None or ref is None:
        return "–"
    if unit == "mL":
        rel = 100.0 * (value - ref) / ref if ref else float("nan")
        return f"{value:.1f} ({rel:+.1f} %)"
    return f"{value:.1f} ({value - ref:+.1f})"


def table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        methods = list(row["methods"])
        lines.append(f"### {row['scan']} ({row['modality']}, axis {row['axis']} ×{row['factor']},"
                     f" spacing {row['spacing_mm']} mm)\n")
        if not methods:
            continue
        lines.append("| figure | truth | " + " | ".join(methods) + " |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in methods) + " |")
        psnr = " | ".join(f"{row['methods'][m]['psnr']:.2f} dB" for m in methods)
        lines.append(f"| PSNR vs truth | – | {psnr} |")
        for key, ref in row["truth"].items():
            unit = "mL" if key.startswith("mL") else "HU"
            cells = " | ".join(_fmt(row["methods"][m]["figures"][key], ref, unit)
                               for m in methods)
            lines.append(f"| {key} | {'–' if ref is None else f'{ref:.1f}'} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", nargs="+", help="SCAN or SCAN:AXIS")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--methods", default="bspline,default")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="self-supervised budget (default: medsr's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="bias")
    args = parser.parse_args()
    options = {}
    if args.budget_seconds is not None:
        options["self-supervised"] = {"self_supervised": {"budget_seconds": args.budget_seconds}}
    rows = []
    load = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.scans:  # results written after each scan: a long run keeps what it did
        path, _, axis = spec.partition(":")
        rows.append(measure(Path(path), int(axis or 2), args.factor,
                            args.methods.split(","), options))
        result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "load_before": " ".join(f"{v:.2f}" for v in load),
                              "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())},
                  "rows": rows}
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{args.name}.md").write_text(
            "Bias against the thin-slice truth (value, then difference from the truth; mL: "
            "relative)\n\n" + table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
