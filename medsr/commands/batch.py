"""``medsr batch``: a whole study tree upscaled on a Dask cluster, resumable, with a manifest.

Only typer and the standard library are imported here; Dask and torch load inside the command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medsr.commands import fail
from medsr.commands.choices import Format as BatchFormat
from medsr.commands.choices import Method as BatchMethod
from medsr.commands.choices import Modality as BatchModality
from medsr.commands.choices import Profile, Scale, Spacing


class JobQueue(str, Enum):
    slurm = "slurm"
    pbs = "pbs"


_SHOWN = 20  # failed inputs listed at the end
_ENGINE = "Engine"
_JOBS = "Job queue (SLURM, PBS)"


def batch(
    root: Annotated[Path, typer.Argument(
        help="Study folder: every NIfTI/NRRD/MHA file and every DICOM series under it.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output folder: the tree mirrored, plus manifest.csv.",
        show_default=False)],
    include: Annotated[Optional[list[str]], typer.Option(
        help="Glob on the path relative to ROOT (e.g. 'sub-*/anat/*T1w*'); repeatable. "
             "'*' also crosses '/'.", show_default=False)] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Glob of inputs to leave out; repeatable.", show_default=False)] = None,
    scale: Scale = None,
    spacing: Spacing = None,
    method: Annotated[BatchMethod, typer.Option(
        help="As for medsr upscale: auto, default, self-supervised, bspline or linear.")
    ] = BatchMethod.auto,
    self_supervised: Annotated[bool, typer.Option(
        "--self-supervised", help="Same as --method self-supervised.")] = False,
    budget_seconds: Annotated[float, typer.Option(
        help="Self-supervised: a cap on the training time per scan (it stops earlier, when "
             "the scan's held-out slices stop improving).")] = 150.0,
    steps: Annotated[Optional[int], typer.Option(
        help="Self-supervised: a fixed number of training steps instead of the stopping "
             "rule.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed for self-supervised SR.")] = 0,
    slice_thickness: Annotated[Optional[float], typer.Option(
        help="Slice thickness in mm (default: DICOM SliceThickness, else estimated).",
        show_default=False)] = None,
    slice_profile: Annotated[Optional[Profile], typer.Option(
        help="Slice profile for learned methods.", show_default=False)] = None,
    consistency: Annotated[bool, typer.Option(
        help="Project learned outputs onto the measured slices.")] = True,
    uncertainty: Annotated[bool, typer.Option(
        help="Also write a standard-deviation map NAME_sr_sd beside each output "
             "(learned methods).")] = False,
    modality: Annotated[Optional[BatchModality], typer.Option(
        help="Choose the default model (default: from DICOM, else guessed).",
        show_default=False)] = None,
    fmt: Annotated[Optional[BatchFormat], typer.Option(
        "--format", help="Output format (default: the input's).", show_default=False)] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="Stored dtype (int16, uint16, float32, ...). Default: the input's.",
        show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="Trained model folder; replaces --method.", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (models only).")] = "auto",
    report: Annotated[bool, typer.Option(
        "--report", help="Write each output's visual QC page beside it (NAME_sr.html) and a "
                         "study page OUT/report.html, one sortable row per input.")] = False,
    force: Annotated[bool, typer.Option(
        help="Redo inputs whose output exists and replace it.")] = False,
    workers: Annotated[Optional[int], typer.Option(
        help="Local worker processes. Default: one per core (per GPU with CUDA).",
        show_default=False, rich_help_panel=_ENGINE)] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        help="A running Dask scheduler (tcp://host:8786) or its scheduler file (.json).",
        show_default=False, rich_help_panel=_ENGINE)] = None,
    jobqueue: Annotated[Optional[JobQueue], typer.Option(
        help="Run the workers as batch jobs (needs dask-jobqueue; more settings in "
             "~/.config/dask/jobqueue.yaml).", show_default=False, rich_help_panel=_JOBS)
    ] = None,
    jobs: Annotated[int, typer.Option(help="Jobs to submit, one worker each.",
                                      rich_help_panel=_JOBS)] = 4,
    job_cores: Annotated[int, typer.Option(help="CPUs per job.", rich_help_panel=_JOBS)] = 4,
    job_memory: Annotated[str, typer.Option(help="Memory per job.",
                                            rich_help_panel=_JOBS)] = "16GB",
    job_gpus: Annotated[int, typer.Option(help="GPUs per job.", rich_help_panel=_JOBS)] = 0,
    queue: Annotated[Optional[str], typer.Option(
        help="Partition / queue.", show_default=False, rich_help_panel=_JOBS)] = None,
    account: Annotated[Optional[str], typer.Option(
        help="Account to charge.", show_default=False, rich_help_panel=_JOBS)] = None,
    walltime: Annotated[str, typer.Option(help="Time limit per job.",
                                          rich_help_panel=_JOBS)] = "02:00:00",
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="Show what was read and library warnings.")] = False,
) -> None:
    """Upscale every volume under ROOT into a mirrored tree; reruns skip finished outputs."""
    from medsr.errors import MedsrError
    from medsr.logs import setup_logging

    if sum(x is not None for x in (workers, scheduler, jobqueue)) > 1:
        fail("use only one of --workers, --scheduler and --jobqueue")
    if workers is not None and workers < 1:
        fail("--workers must be at least 1")
    if jobqueue is not None and jobs < 1:
        fail("--jobs must be at least 1")
    setup_logging(verbose)
    if not verbose:  # what batch does (inputs found, files skipped, cluster) is shown anyway
        _show_batch_info()
    method_name = "self-supervised" if self_supervised else method.value
    options: dict = {"method": method_name, "device": device}
    for name, value in (("scale", scale), ("spacing", spacing), ("model", model),
                        ("modality", modality.value if modality else None),
                        ("slice_thickness", slice_thickness),
                        ("slice_profile", slice_profile.value if slice_profile else None)):
        if value is not None:
            options[name] = value
    if uncertainty:
        options["uncertainty"] = True
    if not consistency:
        options["consistency"] = False
    if method_name == "self-supervised":
        options["self_supervised"] = {"budget_seconds": budget_seconds, "steps": steps,
                                      "seed": seed}
    try:
        from medsr.batch import upscale_tree

        with contextlib.ExitStack() as stack:
            client = None
            if jobqueue is not None:
                client = stack.enter_context(_jobqueue_client(
                    jobqueue.value, jobs, cores=job_cores, memory=job_memory, gpus=job_gpus,
                    queue=queue, account=account, walltime=walltime))
            rows = upscale_tree(root, output, fmt=fmt.value if fmt else None, dtype=dtype,
                                force=force, include=include or (), exclude=exclude or (),
                                workers=workers, scheduler=scheduler, client=client,
                                report=report, **options)
    except MedsrError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write to {output}: {err.strerror or err}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "error")}
    failed = [r for r in rows if r["status"] == "error"]
    for row in failed[:_SHOWN]:
        typer.echo(f"error: {row['input']}: {row['error']}", err=True)
    if len(failed) > _SHOWN:
        typer.echo(f"error: ... and {len(failed) - _SHOWN} more (see the manifest)", err=True)
    typer.echo(f"{counts['ok']} upscaled, {counts['skipped']} skipped, {counts['error']} "
               f"failed -> {output / 'manifest.csv'}"
               + (f"; report -> {output / 'report.html'}" if report else ""))
    if counts["error"]:
        raise typer.Exit(1)


def _show_batch_info() -> None:
    """INFO records of :mod:`medsr.batch` on stderr (warnings come through the root setup)."""
    import logging
    import sys

    log = logging.getLogger("medsr.batch")
    for handler in [h for h in log.handlers if h.get_name() == "medsr-batch-cli"]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("medsr-batch-cli")
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.levelno < logging.WARNING)
    log.addHandler(handler)


@contextlib.contextmanager
def _jobqueue_client(kind: str, jobs: int, **kwargs) -> Iterator:
    """A client on a new job-queue cluster of ``jobs`` jobs; both closed on exit."""
    import logging
    import shutil

    from medsr.batch import jobqueue_cluster
    from medsr.errors import MedsrError

    submit = {"slurm": "sbatch", "pbs": "qsub"}[kind]
    if shutil.which(submit) is None:
        raise MedsrError(f"--jobqueue {kind}: {submit} not found; run on a node that can "
                         "submit jobs")
    with jobqueue_cluster(kind, **kwargs) as cluster:
        from distributed import Client

        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            logging.getLogger("medsr").info("submitted %d %s jobs; dashboard: %s", jobs, kind,
                                            client.dashboard_link)
            yield client
