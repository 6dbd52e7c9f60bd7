"""Which route serves an in-plane request best, and how often ``--method auto`` picks it.

For an in-plane ×f request medsr has three routes: the in-plane network, the through-plane
network run along each plane axis in turn (:class:`medsr.methods.PlaneChain`), and B-spline.
``--method auto`` weighs the two networks on the scan's own slices
(:func:`medsr.selfcheck.weigh`) and falls back to B-spline when the chosen one loses. Each
real scan here (held out of every shipped model's training) is degraded in-plane as such data
are made (MR: the central 1/f of k-space; CT: f×f pixel boxes), brought back by every route,
and scored against the truth inside the body (PSNR, SSIM, MAE; :func:`medsr.evaluation.
evaluate`). The table says which route was best and which one auto took.

Usage::

    python benchmarks/route_choice.py --out benchmarks/results/route_choice_v07 \\
        CT:/work/data/base/holdout/lung2_image.nrrd MR:/work/data/base/holdout/colin27_t1.nii.gz
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: grids_eval helpers

from grids_eval import _crop, _degrade, _volume  # noqa: E402

import medsr  # noqa: E402
from medsr.evaluation import evaluate  # noqa: E402
from medsr.geometry import resampled_affine  # noqa: E402
from medsr.metrics import body_mask  # noqa: E402


def routes(lr, lr_affine, modality: str, factors):
    """``{route: (output array, seconds)}`` for B-spline, both networks and auto; auto's
    weighing from its metadata."""
    from medsr.methods import make_upscaler, plane_chain
    from medsr.upscaling import run

    vol = _volume(lr, lr_affine)
    out, meta = {}, {}
    for name, method in (("bspline", "bspline"), ("in-plane network", "default"),
                         ("auto", "auto")):
        t0 = time.perf_counter()
        pred = medsr.upscale(vol, tuple(factors), method=method, modality=modality,
                             device="cpu")
        out[name] = (pred[0].numpy(), time.perf_counter() - t0)
        if name == "auto":
            meta = {"ran": pred.meta["medsr_method"], "weighed": pred.meta.get("medsr_routes"),
                    "selfcheck": pred.meta.get("medsr_selfcheck")}
    plane = make_upscaler(lr.shape, lr_affine, method="default", scale=tuple(factors),
                          modality=modality, device="cpu")
    chain = plane_chain(plane, modality)
    if chain is not None:
        t0 = time.perf_counter()
        pred, _, _ = run(lr[None].astype(np.float32), chain)
        out["through-plane network on each axis"] = (pred[0], time.perf_counter() - t0)
    return out, meta


def case(label: str, path: Path, modality: str, factor: int, max_slices: int) -> list[dict]:
    """Every route on one scan degraded in-plane ×``factor`` (its two finest axes, moved to
    axes 0 and 1; at most ``max_slices`` middle slices across them): a row per route."""
    src = medsr.load_volume(path)
    truth = np.asarray(src[0].numpy(), dtype=np.float32)  # a series: its first volume
    affine = src.affine.numpy().copy()
    order = [int(a) for a in np.argsort(np.linalg.norm(affine[:3, :3], axis=0), kind="stable")]
    truth = np.ascontiguousarray(truth.transpose(order))
    affine[:, :3] = affine[:, order]
    n = truth.shape[2]
    first = max(0, (n - max_slices) // 2)
    truth = truth[:, :, first:first + max_slices]
    affine[:3, 3] += affine[:3, 2] * first
    factors = (factor, factor, 1)
    truth = _crop(truth, factors)
    lr = _degrade(truth, factors, "sinc" if modality == "MR" else "box")
    lr_affine = resampled_affine(affine, [float(f) for f in factors])
    gt = _volume(truth, affine)
    mask = body_mask(truth, modality)[0]
    lo = -1024.0 if modality == "CT" else 0.0
    hi = 3071.0 if modality == "CT" else float(np.percentile(truth, 99.5))
    outputs, meta = routes(lr, lr_affine, modality, factors)
    rows = []
    for name, (array, seconds) in outputs.items():
        r = evaluate(_volume(array, affine), gt, mask=mask, data_range=(lo, hi))
        rows.append({"case": label, "scan": path.name, "modality": modality,
                     "factors": list(factors), "route": name, "psnr": round(r.psnr, 3),
                     "ssim": round(r.ssim, 4), "mae": round(r.mae, 3),
                     "seconds": round(seconds, 1), **({"auto": meta} if name == "auto" else {})})
        print(f"{label:<34} ×{factor} {name:<36} PSNR {r.psnr:6.2f}  SSIM {r.ssim:.4f}  "
              f"MAE {r.mae:8.2f}  {seconds:5.1f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: per case, PSNR/SSIM of every route as a gain over B-spline; the best; auto's."""
    lines = ["| scan | request | B-spline PSNR / SSIM | in-plane network | through-plane "
             "on each axis | auto took | auto vs best |", "| --- " * 7 + "|"]
    for key in dict.fromkeys((r["case"], r["factors"][0]) for r in rows):
        by = {r["route"]: r for r in rows if (r["case"], r["factors"][0]) == key}
        b = by["bspline"]

        def gain(name: str) -> str:
            r = by.get(name)
            return "–" if r is None else f"{r['psnr'] - b['psnr']:+.2f} dB / {r['ssim']:.4f}"

        nets = [n for n in ("in-plane network", "through-plane network on each axis") if n in by]
        best = max(nets + ["bspline"], key=lambda n: by[n]["psnr"])
        auto = by["auto"]
        lines.append(f"| {key[0]} | in-plane ×{key[1]} | {b['psnr']:.2f} dB / {b['ssim']:.4f} | "
                     f"{gain('in-plane network')} | "
                     f"{gain('through-plane network on each axis')} | {auto['auto']['ran']} | "
                     f"{auto['psnr'] - by[best]['psnr']:+.2f} dB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scans", nargs="+", help="MODALITY:PATH[:LABEL] of held-out scans")
    parser.add_argument("--factors", default="2", help="comma-separated in-plane factors")
    parser.add_argument("--max-slices", type=int, default=40,
                        help="middle slices kept across the plane (bounds the time)")
    parser.add_argument("--out", type=Path, required=True, help="results stem (.json, .md)")
    args = parser.parse_args()
    rows = []
    for spec in args.scans:
        modality, path, *label = spec.split(":")
        for f in (int(x) for x in args.factors.split(",")):
            rows += case(label[0] if label else Path(path).name.split(".")[0], Path(path),
                         modality.upper(), f, args.max_slices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
