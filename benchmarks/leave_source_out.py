"""Leave-source-out evaluation (issue #31): the held-out sources of the corpus built by
``scripts/build_corpus.py`` (sources no shipped or candidate model trained on), each degraded
on every grid a request may have and brought back by cubic B-spline, by the default route
(``medsr.upscale`` with no method flag) and, when given, by a candidate model.

Grids (as ``benchmarks/grids_eval.py`` makes them): through-plane ×3 and ×5 (slab averages of
f thin slices along the finest in-plane axis, where the truth is thin), in-plane ×2 (MR: the
central half of k-space along both in-plane axes; CT: 2×2 pixel boxes) and all axes ×2 (both
together). PSNR over the volume
(data range: MR 0 to the 99.5th percentile, CT −1024…3071 HU), SSIM over slices, MAE inside
the body mask (:func:`medsr.metrics.body_mask`), all through :func:`medsr.evaluation.evaluate`.
A volume the scanner zero-filled (interpolated) in-plane is read on its acquired grid
(``native_file`` of the manifest): on the interpolated grid the truth holds no detail beyond
half its Nyquist frequency, so an in-plane ×2 k-space copy would lose nothing and every method
would look better than it is. Each volume is cropped about its centre (``--max-inplane``,
``--max-slices``) to bound the runtime on a CPU; at most ``--per-source`` volumes per source
(no two of one sequence and grid).

Usage::

    python scripts/build_corpus.py            # the corpus and docs/corpus_manifest.csv
    python benchmarks/leave_source_out.py --corpus /work/data/corpus \\
        [--candidate runs/mr-corpus] [--candidate-inplane runs/mr-inplane-corpus] \\
        --name leave_source_out_v06
    python benchmarks/leave_source_out.py --compare BEFORE.json AFTER.json   # a markdown table
    # how far self-supervised SR goes on one source's through-plane grids (longer fits, other
    # starting models):
    python benchmarks/leave_source_out.py --source example-dicom-structural \
        --grids "through x3,through x5" --selfsup \
        --selfsup-variant 'fit600={"steps": 600, "weight_average": 1.0}' --name t1_ceiling
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

GRIDS = {"through x3": ("through", 3), "through x5": ("through", 5), "in-plane x2": ("in", 2),
         "all axes x2": ("all", 2)}


def pick(manifest: Path, per_source: int) -> list[dict]:
    """Held-out rows of the manifest, at most ``per_source`` per repository, no two of one
    sequence on one grid (four runs of one protocol count once)."""
    def big_enough(r: dict) -> bool:  # on the grid evaluated, a plane of at least 40²
        dims = [int(n) for n in (r.get("native_matrix") or r["matrix"]).split("x")]
        return sorted(dims)[1] >= 40

    rows = [r for r in csv.DictReader(open(manifest)) if r["split"] == "heldout"
            and r["status"] == "ok" and big_enough(r)]
    chosen = []
    for repo in dict.fromkeys(r["repository"] for r in rows):
        group = [r for r in rows if r["repository"] == repo]
        distinct = {(r["sequence"], r["matrix"], r["voxel_mm"]): r for r in reversed(group)}
        chosen += list(distinct.values())[::-1][:per_source]
    return chosen


def axes_of(affine: np.ndarray, stored: str) -> tuple[int, int]:
    """(slice axis: the coarsest of the stored grid ``stored`` ("AxBxC" mm; the last on
    ties), so a zero-filled plane brought back to its acquired grid stays the plane; the
    finest other axis on the grid evaluated)."""
    from medsr.geometry import spacing

    d = spacing(affine)
    first = [float(v) for v in stored.split("x")]
    slice_axis = max(range(3), key=lambda a: (round(first[a], 2), a))
    plane = [a for a in range(3) if a != slice_axis]
    return slice_axis, min(plane, key=lambda a: (round(d[a], 2), a))


def crop(array: np.ndarray, slice_axis: int, max_inplane: int, max_slices: int) -> tuple:
    """Index slices of a centred crop."""
    index = []
    for a, n in enumerate(array.shape):
        keep = min(n, max_slices if a == slice_axis else max_inplane)
        start = (n - keep) // 2
        index.append(slice(start, start + keep))
    return tuple(index)


def held_out_crop(path: Path, row: dict, max_inplane: int, max_slices: int,
                  other_axis: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A held-out volume's centred crop as float32, its affine (moved to the crop), its slice
    axis and the axis the through-plane grids make thick (``other_axis``: the other in-plane
    one)."""
    import medsr

    src = medsr.load_volume(path)
    affine = src.affine.numpy().astype(np.float64)
    slice_axis, thin_axis = axes_of(affine, row["voxel_mm"])
    if other_axis:
        thin_axis = 3 - slice_axis - thin_axis
    index = crop(src[0].numpy(), slice_axis, max_inplane, max_slices)
    full = src[0].numpy()[index].astype(np.float32)
    affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in index], dtype=np.float64)
    return full, affine, slice_axis, thin_axis


def degraded(full: np.ndarray, affine: np.ndarray, factors: list[int], plane: list[int],
             kind: str, modality: str) -> tuple:
    """``(truth, low, low affine, body mask, PSNR data range)`` for one grid: the truth cropped
    to whole factors and its copy degraded as the grid makes it (MR planes of in-plane and
    all-axes grids: central k-space; otherwise slab or pixel-box averages)."""
    from medsr.consistency import SliceProfile, degrade_axes
    from medsr.geometry import resampled_affine
    from medsr.metrics import body_mask

    truth = full[tuple(slice(0, n // k * k) for n, k in zip(full.shape, factors))]
    ops = [(a, k, SliceProfile("sinc") if a in plane and kind != "through"
            and modality == "MR" else SliceProfile("box", 1.0))
           for a, k in enumerate(factors) if k > 1]
    low = degrade_axes(truth, ops)
    low_affine = resampled_affine(affine, [float(k) for k in factors])
    data_range = (-1024.0, 3071.0) if modality == "CT" else \
        (0.0, float(np.percentile(truth, 99.5)))
    return truth, low, low_affine, body_mask(truth, modality)[0], data_range


def run_volume(path: Path, row: dict, methods: dict[str, dict], args) -> list[dict]:
    """Every grid of ``args.grids`` of one held-out volume by every method."""
    import torch
    from monai.data import MetaTensor

    import medsr
    from medsr.evaluation import evaluate
    from medsr.geometry import spacing

    modality = row["modality"]
    full, affine, slice_axis, thin_axis = held_out_crop(path, row, args.max_inplane,
                                                        args.max_slices, args.other_axis)
    plane = [a for a in range(3) if a != slice_axis]
    out = []
    for grid, (kind, f) in GRIDS.items():
        if grid not in args.grids:
            continue
        factors = [1, 1, 1]
        for a in {"through": [thin_axis], "in": plane, "all": range(3)}[kind]:
            factors[a] = f
        truth, low, low_affine, mask, (lo, hi) = degraded(full, affine, factors, plane,
                                                          kind, modality)
        gt = MetaTensor(torch.from_numpy(np.ascontiguousarray(truth))[None],
                        affine=torch.as_tensor(affine))
        bound = noise_bound_db(truth, factors, hi - lo)
        base = None
        for name, kw in methods.items():
            if kind != "in" and kw.get("_inplane_only") or \
                    kind != "through" and kw.get("_through_only"):
                continue
            call = {k: v for k, v in kw.items() if not k.startswith("_")}
            t0 = time.perf_counter()
            lr = MetaTensor(torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None],
                            affine=torch.as_tensor(low_affine))
            try:
                pred = medsr.upscale(lr, tuple(factors), modality=modality, device="cpu", **call)
            except medsr.MedsrError as err:
                print(f"{path.name} {grid} {name}: {err}", flush=True)
                continue
            seconds = time.perf_counter() - t0
            r = evaluate(pred, gt, mask=mask, data_range=(lo, hi), axis=slice_axis)
            base = r if name == "bspline" else base
            rec = {"source": row["repository"], "series": row["series"], "file": path.name,
                   "vendor": row["vendor"], "sequence": row["sequence"],
                   "voxel_mm": "x".join(f"{v:.3g}" for v in spacing(affine)),
                   "crop": list(truth.shape), "grid": grid,
                   "factors": factors, "method": name,
                   "ran": pred.meta.get("medsr_method"), "psnr": r.psnr, "ssim": r.ssim,
                   "mae": r.mae, "gain_db": r.psnr - base.psnr if base else None,
                   "ssim_gain": r.ssim - base.ssim if base else None,
                   "selfcheck": _verdict(pred.meta.get("medsr_selfcheck")),
                   "noise_bound_db": bound,
                   "seconds": round(seconds, 1)}
            out.append(rec)
            print(f"{row['repository'].split('/')[1][:22]:<22} {path.name[:40]:<40} {grid:<12} "
                  f"{name:<10} {str(rec['ran'])[:26]:<26} PSNR {r.psnr:6.2f} "
                  f"({rec['gain_db'] or 0:+.2f}) SSIM {r.ssim:.4f} MAE {r.mae:8.2f} "
                  f"{seconds:5.1f} s", flush=True)
    return out


def noise_bound_db(truth: np.ndarray, factors, data_range: float) -> float:
    """The PSNR a perfect noise-free answer would score against the (noisy) truth: the truth's
    white noise (:func:`medsr.noise.noise_sd`, the median over its three plane families) keeps
    1/f of its variance in an f-fold box or k-space reduction, the rest is unpredictable. An
    estimate: on coarse EPI the estimator counts some anatomy as noise, and the bound is low."""
    from medsr.noise import noise_sd

    sd = float(np.median([noise_sd(truth, a) for a in range(3)]))
    lost = sd * sd * (1.0 - 1.0 / float(np.prod(factors)))
    return round(10 * np.log10(data_range ** 2 / lost), 2) if lost > 0 else float("inf")


def _verdict(check: dict | None) -> str | None:
    """The self-check's figures in a row: network and B-spline on the scan's own truth."""
    if not check:
        return None
    return (f"{check['learned_psnr']:.2f} vs {check['bspline_psnr']:.2f} dB: "
            f"{'network' if check['passed'] else 'B-spline'}")


def table(rows: list[dict]) -> str:
    lines = ["| source | series (vendor, sequence, voxel mm; crop) | grid | method (route taken) | "
             "PSNR (Δ B-spline) | SSIM (Δ) | MAE body | self-check |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['series']} ({r['vendor']}, {r['sequence']}, {r['voxel_mm']}; "
            f"{'×'.join(map(str, r['crop']))}) | {r['grid']} | {r['method']} ({r['ran']}) | "
            f"{r['psnr']:.2f} ({r['gain_db']:+.2f}) | {r['ssim']:.4f} ({r['ssim_gain']:+.4f}) | "
            f"{r['mae']:.2f} | {r.get('selfcheck') or '–'} |")
    return "\n".join(lines)


def compare(before: list[dict], after: list[dict]) -> str:
    """One line per series and grid: B-spline, the default route before and after (gains over
    B-spline in dB and SSIM), self-supervised SR after, and the self-check's verdict after."""
    def key(r: dict) -> tuple:
        return r["source"], r["series"], r["grid"]

    old = {key(r): r for r in before if r["method"] == "default"}
    lines = ["| source | series | grid | B-spline PSNR / SSIM | default before | default after | "
             "self-supervised | self-check (after) |", "| --- | --- | --- | --- | --- | --- | "
             "--- | --- |"]
    groups: dict[tuple, dict] = {}
    for r in after:
        groups.setdefault(key(r), {})[r["method"]] = r

    def gain(r: dict | None) -> str:
        return "–" if r is None else f"{r['gain_db']:+.2f} / {r['ssim_gain']:+.4f}"

    for (source, series, grid), m in groups.items():
        b = m.get("bspline")
        if b is None:
            continue
        short = source.split("/")[1]
        lines.append(f"| {short} | {series.split(' (')[0]} ({m['bspline']['sequence']}, "
                     f"{m['bspline']['voxel_mm']} mm) | {grid} | {b['psnr']:.2f} / "
                     f"{b['ssim']:.4f} | {gain(old.get((source, series, grid)))} | "
                     f"{gain(m.get('default'))} | {gain(m.get('self-supervised'))} | "
                     f"{(m.get('default') or {}).get('selfcheck') or '–'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/data/corpus"))
    parser.add_argument("--manifest", type=Path, default=Path("docs/corpus_manifest.csv"))
    parser.add_argument("--candidate", type=Path, help="a through-plane model folder")
    parser.add_argument("--candidate-inplane", type=Path, help="an in-plane model folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print the before/after table of two result JSON files and stop")
    parser.add_argument("--selfsup", action="store_true",
                        help="also self-supervised SR (through-plane grids)")
    parser.add_argument("--selfsup-variant", action="append", default=[], metavar="NAME=JSON",
                        help="also self-supervised SR with these options (through-plane "
                             "grids), e.g. 'long={\"steps\": 600, \"weight_average\": 1}'")
    parser.add_argument("--source", help="only held-out repositories whose name holds this")
    parser.add_argument("--grids", help=f"comma-separated, of: {', '.join(GRIDS)}")
    parser.add_argument("--other-axis", action="store_true",
                        help="make the other in-plane axis thick (through-plane grids)")
    parser.add_argument("--per-source", type=int, default=3)
    parser.add_argument("--max-inplane", type=int, default=192)
    parser.add_argument("--max-slices", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="leave_source_out_v06")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text())["rows"] for p in args.compare)
        print(compare(before, after))
        return
    methods: dict[str, dict] = {"bspline": {"method": "bspline"}, "default": {}}
    if args.candidate:
        methods["candidate"] = {"model": str(args.candidate), "_through_only": True}
    if args.candidate_inplane:
        methods["candidate in-plane"] = {"model": str(args.candidate_inplane),
                                         "_inplane_only": True}
    if args.selfsup:
        methods["self-supervised"] = {"method": "self-supervised", "_through_only": True}
    for variant in args.selfsup_variant:
        name, _, options = variant.partition("=")
        methods[name] = {"method": "self-supervised", "self_supervised": json.loads(options),
                         "_through_only": True}
    args.grids = args.grids.split(",") if args.grids else list(GRIDS)
    if unknown := set(args.grids) - set(GRIDS):
        parser.error(f"unknown grids {sorted(unknown)}; known: {', '.join(GRIDS)}")
    load = os.getloadavg()
    t0 = time.perf_counter()
    rows = []
    for row in pick(args.manifest, args.per_source):
        if args.source and args.source not in row["repository"]:
            continue
        rows += run_volume(args.corpus / (row.get("native_file") or row["file"]), row, methods,
                           args)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_before": " ".join(f"{v:.2f}" for v in load),
                          "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                          "seconds": round(time.perf_counter() - t0)},
              "candidate": str(args.candidate or ""), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / f"{args.name}.md").write_text(table(rows) + "\n")
    with open(args.out / f"{args.name}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if k not in ("factors",)],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(table(rows))


if __name__ == "__main__":
    main()
