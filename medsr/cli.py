"""Command line: ``medsr upscale``, ``medsr info``, ``medsr sample``, ``medsr report``, ...

Heavy imports (torch, MONAI, SimpleITK) happen inside the commands so ``--help`` is quick;
volumes travel as :class:`medsr.io.Frames`, so ``info`` and interpolation load no torch or
MONAI (``tests/test_cli.py`` checks it).
User mistakes end with one ``error:`` line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medsr.commands import fail
from medsr.commands.batch import batch
from medsr.commands.choices import (Method, Modality, OutputFormat, PrecisionOption, Profile,
                                    Scale, Spacing)
from medsr.commands.evaluate import benchmark, evaluate
from medsr.commands.fuse import fuse
from medsr.commands.report import check_report_path, report_path
from medsr.commands.report import report as report_command

app = typer.Typer(help="Super-resolution of medical volumes (MRI, CT) with exact geometry.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


def _print_version(value: bool) -> None:
    if value:
        from medsr import __version__

        typer.echo(f"medsr {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print medsr's version and exit.")] = False) -> None:
    """Super-resolution of medical volumes (MRI, CT) with exact geometry."""


def _describe(volume) -> str:
    from medsr.geometry import spacing
    from medsr.io import volume_frames

    array, affine, _ = volume_frames(volume)
    shape = "×".join(str(s) for s in array.shape[1:])
    sp = "×".join(f"{s:.3g}" for s in spacing(affine))
    frames = f" ({array.shape[0]} volumes)" if array.shape[0] > 1 else ""
    return f"{shape} at {sp} mm{frames}"


@app.command()
def upscale(
    inputs: Annotated[list[Path], typer.Argument(
        help="Volumes: NIfTI, a DICOM folder or multi-frame file, NRRD, MHA, ...",
        show_default=False)],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output",
        help="Output file or DICOM folder; with several inputs, a folder for the outputs. "
             "Default: NAME_sr beside each input.")] = None,
    scale: Scale = None,
    spacing: Spacing = None,
    isotropic: Annotated[Optional[float], typer.Option(
        help="Target spacing MM on every axis (e.g. 1 for 1 mm isotropic), met exactly; "
             "instead of --scale/--spacing.", show_default=False)] = None,
    method: Annotated[Method, typer.Option(
        help="auto: the shipped default models for the modality when they cover the grid "
             "(in-plane, through-plane, or both chained), else bspline; default: those "
             "models or an error; bspline or linear interpolation.")] = Method.auto,
    self_supervised: Annotated[bool, typer.Option(
        "--self-supervised", help="Same as --method self-supervised: learn from the scan's "
                                  "own in-plane slices, no training data needed.")] = False,
    budget_seconds: Annotated[float, typer.Option(
        help="Self-supervised: a cap on the training time per scan (it stops earlier, when "
             "the scan's held-out slices stop improving).")] = 150.0,
    slice_thickness: Annotated[Optional[float], typer.Option(
        help="Slice thickness in mm of the upscaled axis, for learned methods (default: "
             "DICOM SliceThickness, else the slice spacing).",
        show_default=False)] = None,
    slice_profile: Annotated[Optional[Profile], typer.Option(
        help="Slice profile of the upscaled axis: auto (estimate shape and width from the "
             "image), box or gaussian (with --slice-thickness or the spacing as FWHM).",
        show_default=False)] = None,
    consistency: Annotated[bool, typer.Option(
        "--consistency/--no-consistency",
        help="Make learned outputs reproduce the measured slices when degraded again.")
    ] = True,
    noise_sd: Annotated[Optional[float], typer.Option(
        help="Noise sd of the scan in its units, for learned methods: the output reproduces "
             "the input within it instead of copying the noise (default: measured on the "
             "scan; 0: exactly).", show_default=False)] = None,
    uncertainty: Annotated[Optional[Path], typer.Option(
        help="Also write a calibrated voxel-wise standard deviation (learned methods) here; "
             "with several inputs a folder (NAME_sd beside the format).",
        show_default=False)] = None,
    volume_index: Annotated[Optional[int], typer.Option(
        "--volume", help="Upscale only this volume (0-based) of a 4D input.",
        show_default=False)] = None,
    max_memory: Annotated[Optional[float], typer.Option(
        help="Memory limit in GiB (default: the memory available). Large outputs are made "
             "in a temporary file beside the output and slabs shrink to fit; a request that "
             "cannot fit is refused before any work.", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option(
        "-v", "--verbose", help="Show progress details and library warnings.")] = False,
    steps: Annotated[Optional[int], typer.Option(
        help="Self-supervised: a fixed number of training steps instead of the stopping rule "
             "(with --seed and --precision fp32, the same result on every machine).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed for self-supervised SR.")] = 0,
    save_model: Annotated[Optional[Path], typer.Option(
        help="Keep the self-supervised model in this folder (reuse with --model).",
        show_default=False)] = None,
    modality: Annotated[Optional[Modality], typer.Option(
        help="Choose the default model (default: from DICOM, else guessed: air at -1000 "
             "HU means CT).", show_default=False)] = None,
    fmt: OutputFormat = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="Stored dtype (int16, uint16, float32, ...). Default: the input's.",
        show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="Trained model folder (or its weights.safetensors with card.json beside it), or "
             "a shipped model's name (default_mr, default_mr_coarse, default_ct); replaces "
             "--method.", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (models only).")] = "auto",
    precision: PrecisionOption = None,
    series: Annotated[Optional[str], typer.Option(
        help="SeriesInstanceUID to read from a DICOM folder with several series.",
        show_default=False)] = None,
    report_page: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write a visual QC page (views, profile, facts) to this .html "
                         "file; with several inputs a folder (NAME_sr.html).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Upscale volumes onto a finer grid that covers the same physical extent."""
    import time

    from tqdm.auto import tqdm

    import medsr
    from medsr.errors import MedsrError
    from medsr.io import default_output, output_format, read_frames
    from medsr.io.values import check_dtype
    from medsr.logs import setup_logging
    from medsr.report.scan import peak_memory

    setup_logging(verbose)
    if precision is not None:
        from medsr.runtime import set_precision

        set_precision(precision.value)
    fmt_name = fmt.value if fmt is not None else None
    many = len(inputs) > 1
    method_name = "self-supervised" if self_supervised else method.value
    options = {"budget_seconds": budget_seconds, "steps": steps, "seed": seed,
               "save_model": save_model}
    try:  # refuse a bad request before any work
        if dtype is not None:
            check_dtype(dtype)
        if output is not None and not many:
            output_format(output, fmt_name)
        if uncertainty is not None and not many:
            output_format(uncertainty, fmt_name)
        if report_page is not None and not many:
            check_report_path(report_page, force)
    except MedsrError as err:
        fail(str(err))
    for folder, what in ((output, "--output"), (uncertainty, "--uncertainty"),
                         (report_page, "--report")):
        if many and folder is not None:
            if folder.exists() and not folder.is_dir():
                fail(f"with several inputs, {what} must be a folder, not the file {folder}")
            folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    for src in tqdm(inputs, desc="volumes", unit="vol", disable=not many or None):
        dst = (default_output(src, fmt_name, output) if many or output is None else output)
        sd_dst = uncertainty
        if uncertainty is not None and many:
            sd_dst = default_output(src, fmt_name, uncertainty, tag="_sd")
        page = report_path(dst, report_page) if report_page is not None and many \
            else report_page
        try:
            if page is not None and many:
                check_report_path(page, force)
            volume = read_frames(src, series_uid=series, volume=volume_index)
            started = time.perf_counter()
            with tqdm(total=100, desc=src.name, unit="%", leave=False, disable=None) as bar:
                def report(done: float, bar=bar) -> None:
                    bar.update(round(done * 100) - bar.n)

                result = medsr.upscale(volume, scale, spacing=spacing, isotropic=isotropic,
                                       method=method_name,
                                       model=model, device=device, progress=report,
                                       modality=modality.value if modality else None,
                                       self_supervised=options, consistency=consistency,
                                       uncertainty=sd_dst is not None,
                                       slice_thickness=slice_thickness,
                                       slice_profile=slice_profile.value if slice_profile
                                       else None, max_memory_gb=max_memory,
                                       scratch=dst.parent if dst.parent.is_dir() else None,
                                       save_format=output_format(dst, fmt_name),
                                       noise_sd=noise_sd)
            seconds = time.perf_counter() - started
            result, sd_map = result if isinstance(result, tuple) else (result, None)
            medsr.save_volume(result, dst, fmt=fmt_name, dtype=dtype, force=force,
                              inputs=list(inputs))
            if sd_map is not None:
                medsr.save_volume(sd_map, sd_dst, fmt=fmt_name, dtype="float32", force=force,
                                  inputs=list(inputs))
            if page is not None:
                from medsr.report import RunInfo, write_report

                write_report(page, volume, result, sd_map,
                             RunInfo(seconds, peak_memory(), src.name, dst.name))
        except MedsrError as err:
            failures += 1
            typer.echo(f"error: {err}", err=True)
            continue
        typer.echo(f"{src}: {_describe(volume)} -> {_describe(result)} "
                   f"({_method_note(result)}) -> {dst}"
                   + (f"; uncertainty (sd) -> {sd_dst}" if sd_map is not None else "")
                   + (f"; report -> {page}" if page is not None else ""))
    if failures:
        raise typer.Exit(1)


def _method_note(result) -> str:
    """What ran, with the slice profile and consistency figure of a learned method."""
    meta = result.meta
    note = meta["medsr_method"]
    if "medsr_consistency_psnr" in meta:
        psnr = meta["medsr_consistency_psnr"]
        ops = meta.get("medsr_operators") or []
        inplane = [o for o in ops if o["profile"] == "sinc"]
        if inplane:
            note += f"; in-plane k-space ×{inplane[0]['factor']}"
        boxes = [o for o in ops if o["profile"] != "sinc"]
        if boxes:
            prof = meta["medsr_slice_profile"]
            note += f"; slice profile {prof['kind']} {prof['width']:.2f}× spacing"
        note += (f"; re-degraded output vs input "
                 f"{'exact' if psnr == float('inf') else f'{psnr:.1f} dB'}")
        noise = meta.get("medsr_noise_sd") or 0.0
        if noise > 0 and meta.get("medsr_consistency_residual_sd") is not None:
            note += (f" (residual {meta['medsr_consistency_residual_sd'] / noise:.2f}× the "
                     f"noise sd {noise:.3g})")
    fitted = meta.get("medsr_self_supervised") or {}
    if "held_out_gain_db" in fitted:
        note += (f"; {fitted['steps']} steps ({fitted['stopped']}), held-out pairs "
                 f"{fitted['held_out_gain_db']:+.2f} dB over B-spline")
        if fitted.get("weight_average", 1.0) < 1.0:
            note += f" (weights {fitted['weight_average']:g} fitted, the rest the starting model's)"
    return note


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    data: Annotated[Optional[list[Path]], typer.Option(
        help="Training volumes or folders (repeatable); replaces data.train.",
        show_default=False)] = None,
    val: Annotated[Optional[list[Path]], typer.Option(
        help="Validation volumes or folders (repeatable); replaces data.val.",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory. Default: runs/NAME from the config.", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option(
        help="Replaces optim.max_steps.", show_default=False)] = None,
    init: Annotated[Optional[Path], typer.Option(
        help="Start from this model's weights (fine-tuning); replaces network.init.",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly.")] = False,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.auto,
) -> None:
    """Train an SR network on volumes degraded to low resolution on the fly.

    Runs on several GPUs (or CPU processes) under `torchrun --nproc_per_node N -m medsr train`.
    """
    import logging

    from medsr.errors import MedsrError
    from medsr.training.config import load_config
    from medsr.training.loop import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides: dict = {}
    if data:
        overrides["data.train"] = [str(p) for p in data]
    if val:
        overrides["data.val"] = [str(p) for p in val]
    if max_steps is not None:
        overrides["optim.max_steps"] = max_steps
    if init is not None:
        overrides["network.init"] = str(init)
    try:
        cfg = load_config(config, overrides)
        run_dir = out or Path("runs") / cfg.name
        result = run_training(cfg, run_dir, resume=resume, device=device.value)
    except MedsrError as err:
        fail(str(err))
    best = f", best validation PSNR {result.best_psnr:.2f} dB" if result.best_psnr else ""
    typer.echo(f"trained {result.step} steps{best} -> {result.run_dir}")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="A volume or DICOM folder.")],
         series: Annotated[Optional[str], typer.Option(help="DICOM SeriesInstanceUID.")] = None,
         verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                               help="Show what was read and library warnings.")
                            ] = False,
         ) -> None:
    """Print shape, spacing, affine (RAS), dtype, modality and the volumes of an input."""
    import numpy as np

    from medsr.errors import MedsrError
    from medsr.io import read_frames, volume_frames
    from medsr.logs import setup_logging

    setup_logging(verbose)
    try:
        volume = read_frames(path, series_uid=series)
    except MedsrError as err:
        fail(str(err))
    _, affine, source = volume_frames(volume)
    typer.echo(f"{path}: {_describe(volume)}, {source.format}, dtype {source.dtype}, "
               f"modality {source.modality or 'unknown'}")
    made_by = source.made_by()
    if made_by is not None:
        typer.echo(f"made by {made_by}")
    lossy = source.lossy_compression()
    if lossy is not None:
        typer.echo(f"lossily compressed before ({lossy})")
    flat = [a for a, n in enumerate(volume.shape[1:]) if n == 1]
    if flat:
        example = " ".join("1" if a == flat[0] else "F" for a in range(3))
        typer.echo(f"a single slice: upscaled in its plane only (--scale {example})")
    labels = source.extra.get("frames")
    count = int(volume.shape[0])
    if isinstance(labels, list) and len(labels) == count:  # pydicom loads only then
        from medsr.io.dicom_groups import describe_volumes

        typer.echo(describe_volumes(labels))
    else:
        typer.echo(f"{count} volume{'s' if count != 1 else ''}")
    typer.echo(np.array2string(affine, precision=4, suppress_small=True))


@app.command()
def sample(dest: Annotated[Path, typer.Argument(help="Where to copy the sample scan (.nrrd).")],
           force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False
           ) -> None:
    """Copy the shipped real sample (brain MR, T1 post-contrast, 6.5 mm slices) to DEST."""
    import shutil

    from medsr.data import SAMPLE_MR

    if dest.is_dir():
        dest = dest / SAMPLE_MR.name
    if dest.exists() and not force:
        fail(f"{dest} exists; pass --force to replace it")
    try:
        shutil.copyfile(SAMPLE_MR, dest)
    except OSError as err:
        fail(f"cannot write {dest}: {err.strerror}")
    typer.echo(str(dest))

app.command()(evaluate)
app.command()(benchmark)
app.command()(batch)
app.command()(fuse)
app.command("report")(report_command)


def main() -> None:
    """Console-script entry point."""
    # On a busy machine torch's idle OpenMP threads sleep instead of spinning (unless the user
    # chose): at load 14 on 2 cores a self-supervised training step took 0.63 s instead of
    # 2.35 s. On a quiet one OpenMP's own default (spin a little, then sleep) is faster:
    # self-supervised SR 51 s instead of 63 s end to end (docs/speed.md). Before torch loads.
    if busy():
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(app())


def busy() -> bool:
    """Whether the machine's load (1-minute average) is over 1.5× the cores this process may
    use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        return os.getloadavg()[0] > 1.5 * cores
    except OSError:
        return False
