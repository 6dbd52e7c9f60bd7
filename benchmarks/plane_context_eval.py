"""Does context across planes help the through-plane refiner? (issue #31, the 0.67 mm T1)

The plane networks see one plane at a time. This experiment gives the shipped fine-plane MR
model (``default_mr``) the two neighbouring planes too: a convolution over them, added to its
first layer's features and zero at the start, so step 0 is the 2D model (arm ``25d``). Arm
``2d`` is the same fine-tune without the neighbours, so the two differ only in the context.
Both learn from the training volumes that are fine on all three axes (a neighbour plane must
be as fine as the plane) with the degradations of ``configs/corpus_mr.yaml`` (box or Gaussian
profile 0.5–1.2× the spacing, ×2–×8, Rician noise on 60 % of the patches), L1 loss, bfloat16
steps and a moving average of the weights. ``eval`` scores each arm and the shipped model, all
run the same way here (both plane views averaged, no data consistency), on a held-out source
of ``benchmarks/leave_source_out.py`` (its crop; through-plane ×3 and ×5): PSNR and SSIM gain
over B-spline.

Usage::

    python benchmarks/plane_context_eval.py train --arm 25d --steps 8000 --out runs/ctx25d
    python benchmarks/plane_context_eval.py train --arm 2d --steps 8000 --out runs/ctx2d
    python benchmarks/plane_context_eval.py eval runs/ctx2d runs/ctx25d --json ctx.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # leave_source_out: the held-out rows, their crop and axes
MODEL = HERE.parent / "medsr" / "models" / "default_mr"
CONFIG = HERE.parent / "configs" / "corpus_mr.yaml"
DATA = ["/work/data/corpus/train_mr_mix", "/work/data/base/train_mr", "/work/data/base/extra_mr"]


class PlaneContext(nn.Module):
    """A through-plane ``lrrefiner`` that also sees the planes either side (``context``)."""

    def __init__(self, base: nn.Module, context: bool) -> None:
        super().__init__()
        self.base, self.context = base, context
        self.side = nn.Conv2d(2, base.config["features"], 3, padding=1)
        nn.init.zeros_(self.side.weight)
        nn.init.zeros_(self.side.bias)

    def forward(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        """``x``: (B, 3, H, w), the neighbour, the plane, the other neighbour."""
        plane = x[:, 1:2]
        with torch.autocast(x.device.type, enabled=False):
            skip = self.base.skip(plane.float(), factor)
        feat = self.base.conv_first(plane)
        if self.context:
            feat = feat + self.side(x[:, [0, 2]])
        feat = feat + self.base.conv_after_body(self.base.body(feat))
        return skip + self.base.heads[str(factor)](feat)


def shipped() -> tuple[nn.Module, dict]:
    from medsr.checkpoint import load_model

    net, card = load_model(MODEL)
    return net.float(), card


def fine_volumes(data: list[str]) -> list:
    """The training volumes that are high resolution on all three axes."""
    from medsr.training.config import load_config
    from medsr.training.data import find_volumes, load_volumes

    volumes = load_volumes(find_volumes(data), load_config(str(CONFIG)))
    return [v for v in volumes if set(v.hr_axes) == {0, 1, 2} and min(v.data.shape) >= 16]


def sample(volumes: list, rng: np.random.Generator, factor: int, size: int = 64):
    """(LR (3, size, size/f), HR (1, size, size)): three neighbouring planes, degraded along
    their last axis as ``configs/corpus_mr.yaml`` degrades, and the middle plane's truth."""
    from medsr.transforms.degrade import add_noise, slice_profile

    width = factor * max(2, round(size / factor))
    while True:
        vol = volumes[rng.integers(len(volumes))].data
        normal, lr_axis = (int(a) for a in rng.choice(3, 2, replace=False))
        other = 3 - normal - lr_axis
        if vol.shape[other] < size or vol.shape[lr_axis] < width or vol.shape[normal] < 3:
            continue
        j = int(rng.integers(1, vol.shape[normal] - 1))
        i0 = int(rng.integers(0, vol.shape[other] - size + 1))
        k0 = int(rng.integers(0, vol.shape[lr_axis] - width + 1))
        block = vol.permute(normal, other, lr_axis)[j - 1:j + 2, i0:i0 + size, k0:k0 + width]
        if float((block[1] > 0.02).float().mean()) >= 0.3:
            break
    if rng.random() < 0.5:
        block = block.flip(1)
    if rng.random() < 0.5:
        block = block.flip(0)
    thickness = float(rng.uniform(0.5, 1.2)) * factor
    profile = ("box", "gaussian")[int(rng.integers(2))]
    lr = slice_profile(block.contiguous(), 1, factor, thickness, profile)
    if rng.random() < 0.6:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        lr = add_noise(lr, float(rng.uniform(0.005, 0.05)), rician=True, generator=gen)
    return lr, block[1:2]


def train(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    net = PlaneContext(shipped()[0], args.arm == "25d")
    volumes = fine_volumes(args.data)
    print(f"{len(volumes)} volumes fine on every axis", flush=True)
    ema = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=1.5e-4)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        factor = int(rng.integers(2, 9))
        pairs = [sample(volumes, rng, factor) for _ in range(16)]
        lr, hr = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(lr, factor)
        loss = (out.float() - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for slow, fast in zip(ema.parameters(), net.parameters(), strict=True):
                slow.mul_(0.999).add_(fast.detach(), alpha=0.001)
        if step % 500 == 0:
            print(step, round(float(loss.detach()), 4), f"{time.time() - t0:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()},
              str(out / "weights.safetensors"))
    (out / "run.json").write_text(json.dumps({"arm": args.arm, "steps": args.steps,
                                              "seed": args.seed, "volumes": len(volumes)}))


@torch.no_grad()
def upscale_view(net: nn.Module, volume: torch.Tensor, thick: int, normal: int, factor: int
                 ) -> torch.Tensor:
    """``volume`` (normalised, thick along ``thick``) upscaled plane by plane, the planes
    stacked along ``normal`` (edge planes repeat as their own neighbours)."""
    other = 3 - thick - normal
    planes = volume.permute(normal, other, thick)
    padded = torch.cat([planes[:1], planes, planes[-1:]])
    out = []
    for j in range(planes.shape[0]):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out.append(net(padded[j:j + 3][None], factor).float()[0, 0])
    return torch.stack(out).permute(*np.argsort([normal, other, thick]).tolist())


def evaluate(args: argparse.Namespace) -> None:
    import leave_source_out as lso
    from monai.data import MetaTensor
    from safetensors.torch import load_file

    import medsr
    from medsr.evaluation import evaluate as score
    from medsr.transforms.intensity import fit_scaling

    torch.set_num_threads(2)
    row = next(r for r in lso.pick(HERE.parent / "docs" / "corpus_manifest.csv", 3)
               if args.source in r["repository"])
    full, affine, slice_axis, thin = lso.held_out_crop(
        args.corpus / (row.get("native_file") or row["file"]), row, 192, 40)
    plane = [a for a in range(3) if a != slice_axis]
    base, card = shipped()
    nets = {"shipped default_mr": PlaneContext(copy.deepcopy(base), False)}
    for folder in map(Path, args.dirs):
        run = json.loads((folder / "run.json").read_text())
        net = PlaneContext(copy.deepcopy(base), run["arm"] == "25d")
        net.load_state_dict(load_file(str(folder / "weights.safetensors")))
        nets[f"{run['arm']}, {run['steps']} steps ({folder.name})"] = net.eval()

    def volume(array: np.ndarray, a: np.ndarray) -> MetaTensor:
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None],
                          affine=torch.as_tensor(a))

    results = {}
    for factor in (3, 5):
        factors = [factor if a == thin else 1 for a in range(3)]
        truth, low, low_affine, mask, data_range = lso.degraded(full, affine, factors, plane,
                                                                "through", "MR")
        gt = volume(truth, affine)
        scaling = fit_scaling(low, card["normalization"])
        normed = torch.from_numpy(np.ascontiguousarray(scaling.forward(low), dtype=np.float32))
        bspline = medsr.upscale(volume(low, low_affine), tuple(factors), method="bspline")
        ref = score(bspline, gt, mask=mask, data_range=data_range, axis=slice_axis)
        for name, net in nets.items():
            views = [upscale_view(net, normed, thin, n, factor) for n in range(3) if n != thin]
            pred = scaling.inverse((sum(views) / len(views)).numpy())
            r = score(volume(pred, affine), gt, mask=mask, data_range=data_range, axis=slice_axis)
            results[f"x{factor} {name}"] = {"gain_db": round(r.psnr - ref.psnr, 3),
                                            "ssim_gain": round(r.ssim - ref.ssim, 4)}
            print(f"x{factor} {name:<40} {r.psnr - ref.psnr:+.3f} dB  "
                  f"SSIM {r.ssim - ref.ssim:+.4f}", flush=True)
    Path(args.json).write_text(json.dumps({"source": row["repository"], "rows": results},
                                          indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arm", choices=("25d", "2d"), required=True)
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--data", action="append", help=f"training folders (default {DATA})")
    e = sub.add_parser("eval")
    e.add_argument("dirs", nargs="*", help="folders written by train")
    e.add_argument("--json", required=True)
    e.add_argument("--corpus", type=Path, default=Path("/work/data/corpus"))
    e.add_argument("--source", default="example-dicom-structural")
    args = parser.parse_args()
    if args.command == "train":
        args.data = args.data or DATA
        train(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
