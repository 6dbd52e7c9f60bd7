"""Which route serves an in-plane request best, and how often ``--method auto`` picks it.

For an in-plane ×f request medsr could take three routes: the in-plane network, the
through-plane network run along each plane axis in turn, and B-spline. ``--method auto``
takes the in-plane network and falls back to B-spline when it loses the self-check. The
through-plane chain, and weighing the two networks on the scan's own slices
(:func:`self_check_pick`, tried for auto in 0.7 and not kept), are measured here. Each
real scan here (held out of every shipped model's training) is degraded in-plane as such data
are made (MR: the central 1/f of k-space; CT: f×f pixel boxes), brought back by every route,
and scored against the truth inside the body (PSNR, SSIM, MAE; :func:`medsr.evaluation.
evaluate`). The table says which route was best, which one auto took, and which one the
self-check would have picked.

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


def plane_chain(plane_up, modality: str):
    """The through-plane default model along each axis of an in-plane request, with the
    request's operators (k-space or pixel box) and one intensity scaling fitted on the scan;
    sliced along the axis the request leaves alone (the stages' reaches add up there)."""
    from dataclasses import dataclass

    from medsr.methods import ChainUpscaler, ModelUpscaler, load_cached
    from medsr.models import default_model

    @dataclass
    class PlaneChain(ChainUpscaler):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.halo = sum(stage.halo for stage in self.stages)

        @property
        def slab_axes(self) -> list[int]:
            return [3 - sum(plane_up.plane)]

        def through_plane(self):
            return None

        def prepare(self, reference, progress=None) -> None:
            for stage in self.stages:
                stage.prepare(reference)

    from medsr.geometry import plane_pixel

    stages, shape, affine = [], plane_up.shape, plane_up.affine
    for axis in plane_up.plane:
        factors = tuple(plane_up.factor if a == axis else 1 for a in range(3))
        # the model a through-plane request on this grid runs (coarse planes: the coarse one)
        net, card = load_cached(default_model(modality, pixel_mm=plane_pixel(affine, axis)),
                                plane_up.device)
        stages.append(ModelUpscaler("default", shape, affine, factors=factors,
                                    profile=plane_up.profile, net=net, card=card,
                                    device=plane_up.device))
        shape, affine = stages[-1].out_shape, stages[-1].out_affine
    return PlaneChain("through-plane network on each axis", plane_up.shape, plane_up.affine,
                      factors=plane_up.factors, stages=stages)


def self_check_pick(candidates, frames) -> tuple[str, dict]:
    """What weighing the candidates on the scan's own slices would keep (the rule tried for
    ``--method auto`` in 0.7 and not kept): the best :func:`medsr.selfcheck.try_self_check`."""
    from medsr.noise import scan_noise
    from medsr.selfcheck import try_self_check

    reference = frames[0]
    noise = scan_noise(candidates[0], reference, frames=frames)
    scores = {}
    for up in candidates:
        up.noise_sd = noise
        up.prepare(reference)
        check = try_self_check(up, reference)
        scores[up.name] = None if check is None else round(check.learned_psnr, 3)
    scored = {k: v for k, v in scores.items() if v is not None}
    return (max(scored, key=scored.get) if scored else candidates[0].name), scores


def routes(lr, lr_affine, modality: str, factors):
    """``{route: (output array, seconds)}`` for B-spline, the in-plane network, the default
    route (``--method auto``) and the through-plane network on each axis; and what auto ran
    and what the self-check would pick."""
    from medsr.methods import make_upscaler
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
            meta = {"ran": pred.meta["medsr_method"], "selfcheck": pred.meta.get("medsr_selfcheck")}
    frames = lr[None].astype(np.float32)

    def plane():
        return make_upscaler(lr.shape, lr_affine, method="default", scale=tuple(factors),
                             modality=modality, device="cpu")

    chain = plane_chain(plane(), modality)
    t0 = time.perf_counter()
    pred, _, _ = run(frames, chain)
    out[chain.name] = (pred[0], time.perf_counter() - t0)
    pick, scores = self_check_pick([plane(), plane_chain(plane(), modality)], frames)
    meta.update({"self_check_pick": "in-plane network" if pick == "default in-plane" else pick,
                 "self_check_psnr": scores})
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
    """Markdown: per case, each network's PSNR gain over B-spline and SSIM; what auto ran
    and how far it is from the best route; the self-check's pick."""
    chain = "through-plane network on each axis"
    lines = ["| scan | request | B-spline PSNR / SSIM | in-plane network | through-plane "
             "network on each axis | auto ran | auto vs best | self-check would pick |",
             "| --- " * 8 + "|"]
    for key in dict.fromkeys((r["case"], r["factors"][0]) for r in rows):
        by = {r["route"]: r for r in rows if (r["case"], r["factors"][0]) == key}
        b = by["bspline"]

        def gain(name: str) -> str:
            r = by.get(name)
            return "–" if r is None else f"{r['psnr'] - b['psnr']:+.2f} dB / {r['ssim']:.4f}"

        best = max(("in-plane network", chain, "bspline"), key=lambda n: by[n]["psnr"])
        auto = by["auto"]
        lines.append(f"| {key[0]} | in-plane ×{key[1]} | {b['psnr']:.2f} dB / {b['ssim']:.4f} | "
                     f"{gain('in-plane network')} | {gain(chain)} | {auto['auto']['ran']} | "
                     f"{auto['psnr'] - by[best]['psnr']:+.2f} dB | "
                     f"{auto['auto']['self_check_pick']} |")
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
