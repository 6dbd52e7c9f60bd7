"""Throughput of ``medsr batch`` (``upscale_tree``) on local worker processes.

Builds a study tree of small real-ish volumes (crops, flips and intensity changes of the shipped
brain MR, 0.78 × 0.78 × 6.5 mm, int16 NIfTI) and upscales it through-plane with B-spline using
1, then 2, local Dask workers (one thread each). Usage::

    python benchmarks/batch_throughput.py [--volumes 20] [--configs 1x2,2x1] [--scale 1 1 4]

Reports the wall time including the cluster start, volumes per minute with and without that
start, and the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def build_tree(root: Path, count: int) -> None:
    """``sub-NN/anat/sub-NN_T1w.nii.gz``: varied crops of the sample MR."""
    import medsr
    from medsr.data import SAMPLE_MR

    volume = medsr.load_volume(SAMPLE_MR)
    data = volume.numpy()[0]
    affine = np.asarray(volume.affine, dtype=np.float64)[-4:, -4:]
    rng = np.random.default_rng(0)
    for i in range(count):
        x0, y0 = rng.integers(0, 65, size=2)
        crop = data[x0:x0 + 192, y0:y0 + 192, :]
        if i % 2:
            crop = crop[::-1]
        crop = np.rint(crop * rng.uniform(0.8, 1.2)).astype(np.int16)
        shifted = affine.copy()
        shifted[:3, 3] = (affine @ [x0, y0, 0, 1])[:3]
        folder = root / f"sub-{i + 1:02d}" / "anat"
        folder.mkdir(parents=True)
        nib.Nifti1Image(crop, shifted).to_filename(folder / f"sub-{i + 1:02d}_T1w.nii.gz")


def run(root: Path, out: Path, workers: int, threads: int, args
        ) -> tuple[float, float, list[dict]]:
    """(cluster start seconds, processing seconds, rows) on a fresh local cluster set up as
    ``upscale_tree(workers=N)`` sets it up (one task at a time per worker, cores shared out
    as torch/SimpleITK threads)."""
    import logging

    from distributed import Client, LocalCluster

    from medsr.batch import upscale_tree
    from medsr.batch.worker import MedsrSetup

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.register_plugin(MedsrSetup(threads=threads))
        client.run(lambda: __import__("medsr.api"))  # what the first task would import
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = upscale_tree(root, out, method=args.method, scale=args.scale, device="cpu",
                            client=client, progress=False)
        return start, time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--configs", default="1x2,2x1",
                        help="WORKERSxTHREADS per run; upscale_tree(workers=N) gives each "
                             "worker cores/N threads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=int, nargs=3, default=(1, 1, 4))
    parser.add_argument("--method", default="bspline")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "study"
        build_tree(root, args.volumes)
        print(f"{args.volumes} volumes 192×192×25 int16 -> ×{args.scale} with {args.method}, "
              f"{os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}")
        print("| workers × threads | start (s) | processing (s) | vol/min | vol/min with start | "
              "s/volume (median) | load avg (1 min) |")
        print("|---|---|---|---|---|---|---|")
        for rep in range(args.repeats):
            for config in args.configs.split(","):
                n, threads = (int(v) for v in config.split("x"))
                start, busy, rows = run(root, Path(tmp) / f"out{config}-{rep}", n, threads,
                                        args)
                assert all(r["status"] == "ok" for r in rows), rows
                per = statistics.median(float(r["seconds"]) for r in rows)
                print(f"| {n} × {threads} | {start:.1f} | {busy:.1f} | "
                      f"{60 * len(rows) / busy:.0f} | "
                      f"{60 * len(rows) / (start + busy):.0f} | {per:.2f} | "
                      f"{os.getloadavg()[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
