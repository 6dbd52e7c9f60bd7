"""``upscale_tree``: every input of a study tree upscaled on a Dask cluster, with a manifest."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

from medsr.batch.discover import Item, discover
from medsr.batch.manifest import KEPT_ON_SKIP, Manifest, key, read_manifest
from medsr.errors import MedsrError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
REPORT = "report.html"


def upscale_tree(root: str | Path, out: str | Path, *, fmt: str | None = None,
                 dtype: str | None = None, force: bool = False,
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 workers: int | None = None, scheduler: str | None = None,
                 client: Client | None = None,
                 progress: bool = True, report: bool = False,
                 **upscale_options: Any) -> list[dict]:
    """Upscale every volume under ``root`` into a mirrored tree under ``out``.

    Inputs whose output exists are skipped (unless ``force``); failed and missing ones are
    (re)done. ``out/manifest.csv`` gets one row per input as each completes.

    Args:
        root: the study folder (or one volume).
        out: the output folder (created).
        fmt: output format; default the input's (a DICOM series gives a DICOM series).
        dtype: stored dtype; default the input's.
        force: redo inputs whose output exists and replace it.
        include: glob patterns on paths relative to ``root``; inputs must match one.
        exclude: glob patterns; matching inputs are left out.
        workers: processes of a local Dask cluster; default one per core (per GPU with CUDA).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``) or its
            scheduler file (``.json``) instead of a local cluster.
        client: a ``distributed.Client`` to use instead (e.g. on :func:`slurm_cluster`).
        progress: show a progress bar over the inputs.
        report: write each output's visual QC page beside it (``x_sr.html``) and the study's
            page ``out/report.html`` (:mod:`medsr.report.study`), rewritten as inputs complete.
        **upscale_options: passed to :func:`medsr.upscale` (``scale``, ``spacing``,
            ``method``, ``model``, ``modality``, ``device``, ``self_supervised``, ...).

    Returns:
        The manifest rows of this run's inputs (dicts of CSV text with the columns of
        :data:`medsr.batch.manifest.COLUMNS`), sorted by input. The file also keeps the
        earlier rows of inputs left out by ``include``/``exclude``.

    Raises:
        MedsrError: a bad request (missing root, unknown format, method or dtype, ...).
    """
    root, out = Path(root).absolute(), Path(out).absolute()
    _check_request(root, out, fmt, dtype, upscale_options)
    items = discover(root, out, fmt=fmt, include=include, exclude=exclude)
    out.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out / MANIFEST)
    todo: list[Item] = []
    study = _study(out, root) if report else None
    with Manifest(out / MANIFEST) as manifest:
        if study is not None:
            manifest.add = _also(manifest.add, study.add)
        for item in items:
            row = _base_row(item, out)
            if item.problem is not None:
                manifest.add({**row, "status": "error", "error": item.problem})
            elif _exists(item.output) and not force:
                old = previous.get(key(row), {})
                page = _page(item, out) if report else ""
                manifest.add({**row, **{c: old.get(c, "") for c in KEPT_ON_SKIP},
                              "status": "skipped", "seconds": 0, "report": page})
            else:
                todo.append(item)
        logger.info("%d inputs: %d to do, %d skipped, %d not usable", len(items), len(todo),
                    sum(r["status"] == "skipped" for r in manifest.rows),
                    sum(r["status"] == "error" for r in manifest.rows))
        selected = {key(_base_row(i, out)) for i in items}
        _keep_unselected(manifest, previous, selected, root)
        if todo:
            save_options = {"fmt": fmt, "dtype": dtype, "force": force}
            with _connect(client, scheduler, workers, upscale_options) as dask_client:
                _run(dask_client, todo, out, manifest, upscale_options, save_options, progress,
                     report)
    return [row for row in sorted(manifest.rows, key=key) if key(row) in selected]


def _study(out: Path, root: Path):
    from medsr.report.study import StudyReport

    return StudyReport(out / REPORT, title=root.name)


def _also(first, second):
    """``first(row)`` then ``second(row)``: each manifest row also goes to the study page."""
    def add(row: dict) -> None:
        first(row)
        second(row)

    return add


def _page(item: Item, out: Path) -> str:
    """The scan page of an existing output, relative to ``out`` ("" when there is none)."""
    from medsr.report.scan import report_path

    path = report_path(item.output)
    return path.relative_to(out).as_posix() if path.exists() else ""


def _keep_unselected(manifest: Manifest, previous: dict, selected: set, root: Path) -> None:
    """Earlier rows of inputs that still exist but are left out this time (``--include``)."""
    for row_key, row in previous.items():
        if row_key not in selected and row.get("input") and \
                (root if root.is_file() else root / row["input"]).exists():
            manifest.add(row)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _base_row(item: Item, out: Path) -> dict:
    return {"input": item.rel, "series_uid": item.series_uid or "",
            "output": item.output.relative_to(out).as_posix()}


def _check_request(root: Path, out: Path, fmt, dtype, options: dict) -> None:
    from medsr.api import METHODS
    from medsr.io import FORMATS
    from medsr.io.values import check_dtype

    if not root.exists():
        raise MedsrError(f"{root}: no such file or folder")
    if out == root:
        raise MedsrError("the output folder must differ from the input folder")
    if out.exists() and not out.is_dir():
        raise MedsrError(f"--output {out} is a file; give a folder")
    if fmt is not None and fmt not in FORMATS:
        raise MedsrError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None:
        check_dtype(dtype)
    method = options.get("method", "auto")
    if method not in METHODS:
        raise MedsrError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _local_layout(workers: int | None, device: str) -> tuple[int, int, int]:
    """(workers, threads per worker for torch/SimpleITK, GPUs) of a local cluster."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = 0
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = workers or gpus or cores or 1
    if n < 1:
        raise MedsrError("--workers must be at least 1")
    return n, max(1, (cores or 1) // n), gpus


@contextlib.contextmanager
def _connect(client, scheduler: str | None, workers: int | None, options: dict) -> Iterator:
    """A Dask client on ``client``, ``scheduler`` or a new local cluster, set up for medsr."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise MedsrError("medsr batch needs Dask: pip install 'medsr[cluster]'") from None
    from medsr.batch.worker import MedsrSetup

    if client is not None:
        client.register_plugin(MedsrSetup())
        yield client
        return
    if scheduler is not None:
        kw = ({"scheduler_file": scheduler} if scheduler.endswith(".json")
              else {"address": scheduler})
        try:
            own = Client(timeout="30s", **kw)
        except (OSError, TimeoutError, ValueError) as err:
            text = str(err.args[0] if err.args else err).strip() or type(err).__name__
            raise MedsrError(f"cannot connect to the Dask scheduler {scheduler}: "
                             f"{text.splitlines()[0]}") from None
        with own:
            own.register_plugin(MedsrSetup())
            _log_dashboard(own)
            yield own
        return
    n, threads, gpus = _local_layout(workers, str(options.get("device", "auto")))
    logger.info("starting a local Dask cluster: %d worker%s, %d thread%s each%s", n,
                "s" * (n > 1), threads, "s" * (threads > 1), f", {gpus} GPUs" if gpus else "")
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as own:
        own.register_plugin(MedsrSetup(threads=threads, gpus=gpus))
        try:
            import bokeh  # noqa: F401  (without it there is no dashboard to link to)

            _log_dashboard(own)
        except ImportError:
            pass
        yield own


def _log_dashboard(client) -> None:
    link = getattr(client, "dashboard_link", None)
    if link:
        logger.info("Dask dashboard: %s", link)


def _run(client, todo: list[Item], out: Path, manifest: Manifest, upscale_options: dict,
         save_options: dict, progress: bool, report: bool = False) -> None:
    import uuid

    from distributed import as_completed
    from tqdm.auto import tqdm

    from medsr.batch.worker import run_item

    run = uuid.uuid4().hex[:8]
    futures = {client.submit(run_item, item, upscale_options, save_options, report, pure=False,
                             key=f"medsr-{run}-{i}"): item
               for i, item in enumerate(todo)}
    with tqdm(total=len(todo), desc="volumes", unit="vol",
              disable=None if progress else True) as bar, _logs_above(tqdm):
        for future in as_completed(futures):
            item = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a worker died, or the task was lost
                text = str(err).strip().splitlines()
                result = {"status": "error",
                          "error": f"{type(err).__name__}: {text[0] if text else ''}"}
            future.release()
            row = {**_base_row(item, out), **result}
            for companion in ("uncertainty", "report"):
                if row.get(companion):
                    row[companion] = (item.output.parent / row[companion]).relative_to(
                        out).as_posix()
            manifest.add(row)
            if row["status"] == "error":
                logger.warning("%s: %s", item.rel, row["error"])
            bar.update(1)


class _AboveBar:
    """A stream that writes through ``tqdm.write`` so log lines do not break the bar."""

    def __init__(self, stream, tqdm) -> None:
        self.stream, self.tqdm = stream, tqdm

    def write(self, text: str) -> None:
        self.tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _logs_above(tqdm) -> Iterator[None]:
    """Route the console log handlers of medsr and the root logger above the progress bar."""
    import sys

    handlers = {h for name in ("medsr.batch", "medsr", "")
                for h in logging.getLogger(name or None).handlers
                if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)}
    for h in handlers:
        h.setStream(_AboveBar(h.stream, tqdm))
    try:
        yield
    finally:
        for h in handlers:
            h.setStream(h.stream.stream)
