"""Static int8 (QDQ) against fp32 for the default through-plane model: quality and time.

The default model's plane network runs in ONNX Runtime (``medsr.runtime``). Here its residual
graph is quantised statically with ONNX Runtime's own tool (``quantize_static``, QDQ format,
per-channel int8 weights, uint8 activations), calibrated on planes the network sees on a
*non-held-out* scan (``--calib``, slab-averaged ×f), and then run in place of the fp32 graph
on held-out thin scans slab-averaged ×f along ``axis``. Printed as JSON lines: PSNR against
the thin truth (gain over B-spline) and the wall time of the whole upscale call, fp32 then
int8, in the same process (the fp32 graph is exported before the first timing).

Usage::

    python benchmarks/int8_eval.py --calib data/val_ct/ct_brain_atlas_1mm.nii.gz:2:CT \\
        data/holdout_extra/invesalius_ct_head.nii.gz:2:CT --factor 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def thick(path: str, axis: int, f: int):
    """(truth, thick) volumes: ``path`` cropped to a multiple of ``f`` and slab-averaged."""
    from medsr.io import load_volume, make_volume, volume_parts
    from medsr.transforms.degrade import simulate_thick_slices

    array, affine, source = volume_parts(load_volume(path))
    keep = array.shape[axis] // f * f
    truth = make_volume(np.take(array, np.arange(keep), axis=axis), affine, source)
    return truth, simulate_thick_slices(truth, axis, f)


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    import medsr
    from medsr import runtime
    from medsr.evaluation import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="SCAN:AXIS:MODALITY (held out)")
    parser.add_argument("--calib", required=True, help="SCAN:AXIS:MODALITY (not held out)")
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--batches", type=int, default=16, help="calibration batches kept")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    f = args.factor

    # 1. the inputs the network sees on the calibration scan (and the fp32 graph)
    seen: list[np.ndarray] = []
    graphs: dict[int, bytes] = {}
    real_session, real_graph = ort.InferenceSession, runtime._cached_graph

    class Recording(real_session):
        def run(self, names, feeds, *rest):  # noqa: D102
            x = feeds["x"]
            seen.append(x[:: max(1, len(x) // 4)].copy())  # a few planes of each batch
            return super().run(names, feeds, *rest)

    def keep_graph(model, factor, example):
        graphs[factor] = real_graph(model, factor, example)
        return graphs[factor]

    path, axis, modality = args.calib.rsplit(":", 2)
    _, low = thick(path, int(axis), f)
    scale = [1, 1, 1]
    scale[int(axis)] = f
    ort.InferenceSession, runtime._cached_graph = Recording, keep_graph
    runtime._SESSIONS.clear()
    medsr.upscale(low, scale, method="default", modality=modality, device="cpu")
    ort.InferenceSession = real_session
    runtime._cached_graph = real_graph
    runtime._SESSIONS.clear()

    # 2. quantise
    pick = np.linspace(0, len(seen) - 1, min(args.batches, len(seen))).astype(int)
    batches = [seen[i] for i in pick]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):  # noqa: D102
            x = next(self.items, None)
            return None if x is None else {"x": x}

    int8: dict[int, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for factor, graph in graphs.items():
            src, dst = Path(tmp) / f"fp32_{factor}.onnx", Path(tmp) / f"int8_{factor}.onnx"
            src.write_bytes(graph)
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
            int8[factor] = dst.read_bytes()

    # 3. held-out scans, fp32 then int8
    for case in args.cases:
        path, axis, modality = case.rsplit(":", 2)
        axis = int(axis)
        truth, low = thick(path, axis, f)
        scale = [1, 1, 1]
        scale[axis] = f
        base = evaluate(medsr.upscale(low, scale, method="bspline"), truth, axis=axis).psnr
        row = {"scan": path, "axis": axis, "factor": f, "bspline_psnr": round(base, 3)}
        medsr.upscale(low, scale, method="default", modality=modality, device="cpu")  # warm
        for kind in ("fp32", "int8"):
            runtime._SESSIONS.clear()
            if kind == "int8":
                runtime._cached_graph = lambda model, factor, example: int8[factor]
            times, out = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = medsr.upscale(low, scale, method="default", modality=modality,
                                    device="cpu")
                times.append(time.perf_counter() - t0)
            row[kind] = {"gain_db": round(evaluate(out, truth, axis=axis).psnr - base, 3),
                         "seconds": round(float(np.median(times)), 2)}
        runtime._cached_graph = real_graph
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
