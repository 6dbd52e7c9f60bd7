"""CPU seconds (``time.process_time``: every thread of the process) of a ``medsr upscale``'s
stages, in one process: what start-up and model loading, the noise measurement, the self-check,
the slabs (plane networks and projection) and the write cost. The wall-time companion is
``benchmarks/profile_default.py``; CPU time tells versions apart better on a loaded machine.

Runs the CLI's ``app`` (not ``main``: the CLI's OpenMP wait policy for busy machines is not
set, which leaves PyTorch's threads their default). Run it with the checkout to measure first
on ``PYTHONPATH``::

    PYTHONPATH=/path/to/checkout python benchmarks/stage_cpu.py SCAN [UPSCALE ARGUMENTS]
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time

CPU: dict[str, float] = collections.defaultdict(float)


def timed(owner, name: str, stage: str) -> None:
    """Add the CPU time of ``owner.name`` to ``CPU[stage]``."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            CPU[stage] += time.process_time() - start

    setattr(owner, name, wrapper)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    start = time.process_time()
    import medsr.cli
    import medsr.io
    import medsr.upscaling as up

    CPU["import the CLI"] = time.process_time() - start
    timed(up, "choose_route", "route: model card and network")
    timed(up, "scan_noise", "noise")
    timed(up, "try_self_check", "self-check")
    timed(up, "_slab", "slabs: plane networks, projection")
    timed(medsr.io, "save_volume", "write")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.nii.gz")
        try:
            medsr.cli.app(["upscale", sys.argv[1], "-o", out, "--force", *sys.argv[2:]])
        except SystemExit as done:
            if done.code:
                raise
    CPU["total"] = time.process_time() - start
    print(f"load {os.getloadavg()}")
    for stage, seconds in CPU.items():
        print(f"| {stage} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
