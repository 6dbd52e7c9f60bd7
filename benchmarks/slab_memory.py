"""Working set of a learned method per slab: peak RSS of ``medsr.upscaling.run`` beyond the
loaded input, with the outputs on disk (so they do not count), for a few slab sizes.

The fixed part and the bytes per slab voxel fitted from two slab sizes are the constants of
the memory plan (``SLAB_COPIES``, ``ACTIVATION_BYTES``, ``UNCERTAINTY_BYTES`` in
``medsr/upscaling.py``). One fresh process per point (peak RSS only grows)::

    python benchmarks/slab_memory.py --source lung1.nii.gz --slab 40e6 [--uncertainty]
    python benchmarks/slab_memory.py --source lung1.nii.gz --slab 10e6 [--uncertainty]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a CT volume with 5 mm slices")
    parser.add_argument("--slices", type=int, default=40, help="slices of the source used")
    parser.add_argument("--factor", type=int, default=5)
    parser.add_argument("--slab", type=float, default=40e6, help="slab_voxels asked for")
    parser.add_argument("--uncertainty", action="store_true")
    args = parser.parse_args()

    import medsr
    from medsr.io import volume_frames
    from medsr.methods import make_upscaler
    from medsr.upscaling import _slabs, run

    frames, affine, _ = volume_frames(medsr.load_volume(args.source))
    frames = np.ascontiguousarray(frames[..., :args.slices])
    up = make_upscaler(frames.shape[1:], affine, method="default",
                       scale=(1, 1, args.factor), modality="CT", device="cpu")
    axis, slabs = _slabs(up, frames.shape[1:], int(args.slab))
    per_index = int(np.prod(up.out_shape)) // up.out_shape[axis]
    actual = max(b - a for a, b in slabs) * per_index

    def rss() -> int:
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()

    base, t0 = rss(), time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        run(frames, up, uncertainty=args.uncertainty, slab_voxels=int(args.slab),
            scratch=scratch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"uncertainty={args.uncertainty} slabs={len(slabs)} of {actual / 1e6:.1f} M voxels "
          f"(halo {up.halo}) work={(peak - base) / 2**30:.2f} GiB "
          f"({(peak - base) / actual:.1f} B per slab voxel) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
