"""Training throughput (patches/s) of the shipped configs' networks, CPU and (if present) CUDA.

Runs the real training step (forward, L1 loss, backward, AdamW) on batches made by the real
sampler (2D/3D patches degraded on the fly), so data making is included. Usage::

    python benchmarks/train_speed.py [--steps 20] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["edsr2d_thick_x4.yaml", "edsr3d_thick_x4.yaml", "espcn2d_inplane_x2.yaml",
           "default_mr.yaml"]


def measure(config: Path, data: Path, device: torch.device, steps: int) -> float:
    from medsr.nets import build_network
    from medsr.training.config import load_config
    from medsr.training.data import PairSampler, find_volumes, load_volumes
    from medsr.training.loop import _scale

    cfg = load_config(config, {"data.train": [str(data)]})
    sampler = PairSampler(load_volumes(find_volumes(cfg.data.train), cfg), cfg)
    net = build_network(cfg.network.name, spatial_dims=cfg.network.spatial_dims,
                        scale=_scale(cfg), **cfg.network.params).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    amp = device.type == "cuda"
    for step in range(steps + 3):
        if step == 3:  # warm-up done
            if amp:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        lr, hr = (t.to(device) for t in sampler.batch(step))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = (net(lr).float() - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if amp:
        torch.cuda.synchronize()
    return steps * cfg.patch.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="all")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import phantom

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            nib.Nifti1Image(phantom((96, 96, 96), seed=i), np.eye(4)).to_filename(
                f"{tmp}/v{i}.nii.gz")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
              + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
        print(f"{'config':<26} {'device':<6} {'patches/s':>10}")
        for device in devices:
            for name in CONFIGS:
                rate = measure(REPO / "configs" / name, Path(tmp), torch.device(device),
                               args.steps)
                print(f"{name:<26} {device:<6} {rate:>10.1f}")


if __name__ == "__main__":
    main()
