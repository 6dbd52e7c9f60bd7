"""Peak memory and time of network inference for a 512×512×200 output.

Each case runs in its own process (peak RSS on CPU; peak allocated CUDA memory on GPU) with
an untrained network of the shipped shapes: memory and time do not depend on the weights.
Usage::

    python benchmarks/infer_memory.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CASES = [  # (name, network kwargs, card extras, input shape, factors)
    ("2D EDSR x4 (lr input)", {"name": "edsr", "spatial_dims": 2, "scale": [1, 4],
                               "features": 32, "num_blocks": 8}, {"input": "lr"},
     (512, 512, 50), (1, 1, 4)),
    ("2D refiner x4 (default)", {"name": "edsr", "spatial_dims": 2, "scale": [1, 1],
                                 "features": 16, "num_blocks": 8},
     {"input": "interpolated", "factors": [2, 8]}, (512, 512, 50), (1, 1, 4)),
    ("3D EDSR x4 (lr input)", {"name": "edsr", "spatial_dims": 3, "scale": [1, 1, 4],
                               "features": 16, "num_blocks": 4}, {"input": "lr"},
     (512, 512, 50), (1, 1, 4)),
]

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, torch
    from medsr.nets import build_network
    from medsr.inference import upscale_with_model
    net_cfg, extra, shape, factors, device = json.loads(sys.argv[1])
    dev = torch.device(device)
    net = build_network(**net_cfg)
    card = {"network": net_cfg, "scale": net_cfg["scale"], "spatial_dims": net_cfg["spatial_dims"],
            "normalization": {"kind": "window", "lo": -1024, "hi": 3071}, **extra}
    array = np.random.default_rng(0).normal(0, 300, shape).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = upscale_with_model(array, factors, net, card, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    print(json.dumps({"s": dt, "shape": list(out.shape), "rss_mb": peak / 1024,
                      "rss_before_mb": base / 1024, "gpu_mb": gpu}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'network':<26} {'output':>13} {'seconds':>8} {'peak RSS MB':>11} "
          f"{'RSS before':>10} {'peak GPU MB':>11}")
    for name, net_cfg, extra, shape, factors in CASES:
        payload = json.dumps([net_cfg, extra, shape, factors, args.device])
        res = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True,
                             text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        gpu = f"{r['gpu_mb']:.0f}" if r["gpu_mb"] is not None else "-"
        print(f"{name:<26} {'×'.join(map(str, r['shape'])):>13} {r['s']:>8.1f} "
              f"{r['rss_mb']:>11.0f} {r['rss_before_mb']:>10.0f} {gpu:>11}")


if __name__ == "__main__":
    main()
