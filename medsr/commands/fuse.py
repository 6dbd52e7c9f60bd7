"""``medsr fuse STACK STACK [STACK ...] -o OUT``: one isotropic volume from several thick-slice
stacks of one subject (:mod:`medsr.fusion`)."""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medsr.commands import fail
from medsr.commands.choices import GridSpacing, Modality, OutputFormat


class Extent(str, Enum):
    common = "common"
    union = "union"


class Prior(str, Enum):
    learned = "learned"
    none = "none"


def _finite(value):
    """JSON-ready: infinities as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def stack_line(record: dict) -> str:
    """One line per stack: its registration and consistency, or why it was left out."""
    if record.get("left_out"):
        return f"  {record['name']}: left out: {record['left_out']}"
    reg = record.get("registration") or {}
    where = ("reference" if reg.get("reference") else
             f"registered {reg['rotation_deg']:.2f}° {reg['shift_mm']:.2f} mm (correlation "
             f"{reg['correlation']:.3f})" if "rotation_deg" in reg else "header position")
    from medsr.upscaling import _db

    text = f"  {record['name']}: {where}; re-degraded fused vs stack " \
        f"{_db(float(record['consistency_psnr']))}"
    if record.get("residual_over_noise") is not None:
        text += f" (residual {record['residual_over_noise']:.2f}× its noise sd)"
    return text


def fuse(
    stacks: Annotated[list[Path], typer.Argument(
        help="Two or more stacks of one subject (NIfTI, DICOM folders, NRRD, ...), any "
             "orientations; the first is the reference.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output file or DICOM folder. Default: FIRST_fused beside the "
                               "first stack.", show_default=False)] = None,
    isotropic: Annotated[Optional[float], typer.Option(
        help="Grid spacing MM on every axis. Default: the finest in-plane spacing of the "
             "stacks.", show_default=False)] = None,
    spacing: GridSpacing = None,
    extent: Annotated[Extent, typer.Option(
        help="common: the part every stack covers; union: all of them.")] = Extent.common,
    prior: Annotated[Prior, typer.Option(
        help="learned: start from the mean of each stack's default-model SR and change it "
             "least; none: a plain regularised solve from the stacks' B-splines.")
    ] = Prior.learned,
    register: Annotated[bool, typer.Option(
        "--register/--no-register", help="Register the stacks to the first (rigid), or "
                                         "trust their headers.")] = True,
    iterations: Annotated[int, typer.Option(help="The most solver iterations.")] = 30,
    modality: Annotated[Optional[Modality], typer.Option(
        help="Choose the default models (default: from DICOM, else guessed).",
        show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (models only).")] = "auto",
    report_page: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write a visual QC page (each stack, the fused volume in three "
                         "views, residuals, registration) to this .html file.",
        show_default=False)] = None,
    metadata: Annotated[Optional[Path], typer.Option(
        "--metadata", help="Also write the run's record (transforms, per-stack consistency, "
                           "stacks left out) to this .json file.", show_default=False)] = None,
    fmt: OutputFormat = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="Stored dtype (int16, float32, ...). Default: the first stack's.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="Show each step's details.")] = False,
) -> None:
    """Fuse thick-slice stacks of one subject (axial, coronal, sagittal, ...) into one
    isotropic volume: rigid registration, a joint data-consistency solve over every stack,
    medsr's learned models as the prior."""
    import time

    from tqdm.auto import tqdm

    from medsr.errors import MedsrError
    from medsr.io import default_output, output_format, read_frames, save_volume
    from medsr.io.atomic import check_output
    from medsr.io.values import check_dtype
    from medsr.logs import setup_logging
    from medsr.report.scan import peak_memory

    setup_logging(verbose)
    fmt_name = fmt.value if fmt is not None else None
    dst = output if output is not None else default_output(stacks[0], fmt_name, tag="_fused")
    try:  # refuse a bad request before any work
        if dtype is not None:
            check_dtype(dtype)
        output_format(dst, fmt_name)
        check_output(dst, list(stacks), force)
        if report_page is not None:
            from medsr.commands.report import check_report_path

            check_report_path(report_page, force)
        if metadata is not None and metadata.exists() and not force:
            raise MedsrError(f"{metadata} exists; pass --force to replace it")
        if len(stacks) < 2:
            raise MedsrError(f"fuse needs two stacks or more, got {len(stacks)} (one stack: "
                             "use medsr upscale)")
        volumes = [read_frames(p) for p in stacks]
        started = time.perf_counter()
        from medsr.fusion.fuse import fuse as run

        with tqdm(total=100, desc="fuse", unit="%", leave=False, disable=None) as bar:
            def progress(done: float) -> None:
                bar.update(round(done * 100) - bar.n)

            result = run(volumes, spacing=spacing, isotropic=isotropic, extent=extent.value,
                         prior=prior.value, registration=register, iterations=iterations,
                         modality=modality.value if modality else None, device=device,
                         progress=progress)
        seconds = time.perf_counter() - started
        save_volume(result, dst, fmt=fmt_name, dtype=dtype, force=force, inputs=list(stacks))
        record = result.meta["medsr_fuse"]
        if metadata is not None:
            from medsr.report.html import write_text

            write_text(metadata, json.dumps(_finite(record), indent=2) + "\n")
        if report_page is not None:
            from medsr.report.fusion import write_fuse_report
            from medsr.report.scan import RunInfo

            write_fuse_report(report_page, volumes, result,
                              RunInfo(seconds, peak_memory(), output_name=dst.name))
    except MedsrError as err:
        fail(str(err))
    for line in map(stack_line, record["stacks"]):
        typer.echo(line)
    grid = record["grid"]
    typer.echo(f"{len(stacks)} stacks -> {'×'.join(map(str, grid['shape']))} at "
               f"{'×'.join(f'{v:.3g}' for v in grid['spacing_mm'])} mm "
               f"({result.meta['medsr_method']}; {record['solve']['iterations']} iterations, "
               f"{record['solve']['stopped']}; {seconds:.1f} s) -> {dst}"
               + (f"; report -> {report_page}" if report_page is not None else ""))
