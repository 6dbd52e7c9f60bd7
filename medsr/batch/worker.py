"""What runs on a Dask worker: one input upscaled and written, and the per-worker setup.

Imported on the workers (``medsr`` must be installed there); it imports ``distributed``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from medsr.batch.discover import COPIED_SIDECARS, Item, volume_stem
from medsr.errors import MedsrError

logger = logging.getLogger(__name__)

#: threads for torch and SimpleITK on a worker when the client does not say (e.g. set in the
#: job script of a SLURM job, where the nanny resets OMP_NUM_THREADS to 1)
THREADS_ENV = "MEDSR_THREADS"


class MedsrSetup(WorkerPlugin):
    """Per-worker state, set once when the worker starts: threads and the GPU it uses.

    Args:
        threads: torch/SimpleITK threads; default ``$MEDSR_THREADS``, else left as they are.
        gpus: GPUs on each host; worker ``i`` of a local cluster uses GPU ``i % gpus``.
    """

    name = "medsr-setup"

    def __init__(self, threads: int | None = None, gpus: int = 0) -> None:
        self.threads = threads
        self.gpus = gpus

    def setup(self, worker) -> None:
        import SimpleITK as sitk
        import torch

        threads = self.threads or int(os.environ.get(THREADS_ENV, "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        if self.gpus and isinstance(worker.name, int) and torch.cuda.is_available():
            torch.cuda.set_device(worker.name % self.gpus)


def geometry(volume) -> tuple[list[int], list[float]]:
    """Shape ``[X, Y, Z]`` (``[X, Y, Z, T]`` when 4D) and spacing of a ``(T, X, Y, Z)`` volume."""
    from medsr.geometry import spacing

    shape = [int(s) for s in volume.shape]
    dims = shape[1:] + ([shape[0]] if shape[0] > 1 else [])
    affine = np.asarray(volume.affine, dtype=np.float64)[-4:, -4:]
    return dims, [round(float(s), 6) for s in spacing(affine)]


def _text(values: list) -> str:
    return "x".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(err, MedsrError) else f"{type(err).__name__}: {text}".rstrip(": ")


def run_item(item: Item, upscale_options: dict, save_options: dict, report: bool = False
             ) -> dict:
    """Upscale one input and write its output and sidecars (and with ``report``, its visual
    QC page ``x_sr.html`` beside the output); never raises.

    Returns:
        The manifest fields ``status`` (``ok``/``error``), ``method``, ``seconds``,
        ``shape_in``, ``spacing_in``, ``shape_out``, ``spacing_out`` and ``error``; with
        ``report`` also ``report`` (the page's name), ``thumbnail``, ``consistency_db`` and
        ``mean_sd`` for the study page.
    """
    import medsr

    start = time.perf_counter()
    row: dict = {"status": "error"}
    try:
        volume = medsr.load_volume(item.source, series_uid=item.series_uid)
        before = geometry(volume)
        row["shape_in"], row["spacing_in"] = map(_text, before)
        result = medsr.upscale(volume, **upscale_options)
        if not report:
            del volume
        sd = None
        if isinstance(result, tuple):  # uncertainty=True: (output, standard deviation)
            result, sd = result
        after = geometry(result)
        row["shape_out"], row["spacing_out"] = map(_text, after)
        row["method"] = result.meta.get("medsr_method", upscale_options.get("method", ""))
        item.output.parent.mkdir(parents=True, exist_ok=True)
        note = {"method": row["method"],
                "scale": [round(a / b, 4) for a, b in zip(before[1], after[1])],
                "shape_in": before[0], "spacing_in": before[1],
                "shape_out": after[0], "spacing_out": after[1],
                "source": item.source.name, "version": medsr.__version__}
        # companions first: the output's presence means "done"
        if sd is not None:
            sd_path = uncertainty_path(item.output)
            medsr.save_volume(sd, sd_path, inputs=[item.source],
                              **{**save_options, "dtype": None, "force": True})
            note["uncertainty"] = sd_path.name
            row["uncertainty"] = sd_path.name
        write_sidecars(item, note)
        medsr.save_volume(result, item.output, inputs=[item.source], **save_options)
        row["status"] = "ok"
        if report:
            row.update(_scan_report(item, volume, result, sd, time.perf_counter() - start))
    except Exception as err:  # one bad input must not stop the others
        row["error"] = _one_line(err)
        if not isinstance(err, MedsrError):
            logger.debug("%s failed", item.rel, exc_info=True)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _scan_report(item: Item, volume, result, sd, seconds: float) -> dict:
    """Write the scan's page beside its output; the study row's fields (a failed page is
    logged and leaves the row without a link)."""
    from medsr.report.scan import RunInfo, peak_memory, report_path, write_report

    path = report_path(item.output)
    try:
        summary = write_report(path, volume, result, sd,
                               RunInfo(seconds, peak_memory(), item.source.name,
                                       item.output.name))
    except Exception:  # the output is written; its page is a bonus
        logger.warning("%s: the report page failed", item.rel, exc_info=True)
        return {}
    return {"report": path.name, **{k: summary[k] for k in
                                    ("thumbnail", "consistency_db", "mean_sd")}}


def uncertainty_path(output: Path) -> Path:
    """``x_sr.nii.gz -> x_sr_sd.nii.gz`` (a DICOM folder ``x_sr -> x_sr_sd``)."""
    stem, suffix = volume_stem(output.name)
    return output.with_name(f"{stem}_sd{suffix}")


def write_sidecars(item: Item, note: dict) -> list[Path]:
    """Copy ``x.json``/``.bval``/``.bvec`` beside the output as ``x_sr.*``.

    The JSON gets ``"MedsrUpscale": note`` (method, scale, shapes, spacings, version).
    """
    stem, _ = volume_stem(item.output.name)
    written = []
    for sidecar in item.sidecars:
        ext = next(e for e in COPIED_SIDECARS if sidecar.name.lower().endswith(e))
        target = item.output.with_name(stem + ext)
        data = sidecar.read_bytes()
        if ext == ".json":
            try:
                meta = json.loads(data)
                meta["MedsrUpscale"] = note
                data = (json.dumps(meta, indent=2) + "\n").encode()
            except (ValueError, TypeError):
                logger.warning("%s is not a JSON object; copied without a note", sidecar)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        written.append(target)
    return written
