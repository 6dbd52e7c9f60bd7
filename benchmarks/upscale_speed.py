"""Runtime and peak memory of ``medsr.upscale`` + write on the CPU.

Each case runs in a fresh process so peak RSS is its own. Usage::

    python benchmarks/upscale_speed.py [--methods bspline,linear] [--threads N]

Cases: a 512×512×60 int16 CT-like volume ×5 through-plane and a 256×256×36 ×3. ``default``
is the shipped default model (the CT one: the volume holds air at -1024 HU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

CASES = [((256, 256, 36), 3), ((512, 512, 60), 5)]

CHILD = textwrap.dedent("""
    import json, resource, sys, time, tempfile, pathlib
    import numpy as np
    import medsr
    from medsr.io import SourceInfo, make_volume
    shape, factor, method = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    data = rng.integers(-1024, 2000, size=shape).astype(np.int16)
    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    vol = make_volume(data, affine, SourceInfo("nifti", "", "int16", modality="CT"))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = medsr.upscale(vol, (1, 1, factor), method=method)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        medsr.save_volume(out, pathlib.Path(d) / "o.nii")
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"upscale_s": t1 - t0, "write_s": t2 - t1,
                      "peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="bspline,linear,default")
    parser.add_argument("--cases", default="all", help="all, small (256×256×36) or large")
    args = parser.parse_args()
    cases = {"all": CASES, "small": CASES[:1], "large": CASES[1:]}[args.cases]
    print(f"{'input':>12} {'factor':>6} {'output':>13} {'method':>8} {'upscale s':>9} "
          f"{'write s':>7} {'peak RSS MB':>11}")
    for shape, factor in cases:
        for method in args.methods.split(","):
            res = subprocess.run([sys.executable, "-c", CHILD,
                                  json.dumps([shape, factor, method])],
                                 capture_output=True, text=True, check=True,
                                 cwd=tempfile.gettempdir())
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out = (shape[0], shape[1], shape[2] * factor)
            print(f"{'×'.join(map(str, shape)):>12} {factor:>6} {'×'.join(map(str, out)):>13} "
                  f"{method:>8} {r['upscale_s']:>9.2f} {r['write_s']:>7.2f} "
                  f"{r['peak_rss_mb']:>11.0f}")


if __name__ == "__main__":
    main()
