"""``medsr evaluate`` and ``medsr benchmark``: thin wrappers over :mod:`medsr.evaluation`.

Only typer and the standard library are imported here; the rest loads inside the commands.
User mistakes end with one ``error:`` line on stderr and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsr.commands import fail
from medsr.commands.choices import ProfileShape, ResampleMethod


def evaluate(
    pred: Annotated[Path, typer.Argument(help="The super-resolved volume.", show_default=False)],
    gt: Annotated[Path, typer.Argument(help="The ground truth.", show_default=False)],
    mask: Annotated[Optional[Path], typer.Option(
        help="Mask volume on PRED's grid (nonzero inside) for MAE. "
             "Default: an automatic body mask of GT.", show_default=False)] = None,
    data_range: Annotated[Optional[tuple[float, float]], typer.Option(
        "--range", help="Clip both volumes to LO HI. Default: CT [-1024, 3071] HU; "
                        "MR [0, 99.5th percentile of GT]; else GT min..max.",
        show_default=False)] = None,
    axis: Annotated[Optional[int], typer.Option(
        help="Slice axis (0, 1, 2). Default: the axis PRED was upscaled along if it records "
             "one, else the last.", show_default=False)] = None,
    csv: Annotated[Optional[Path], typer.Option(
        help="Write per-slice PSNR/SSIM to this CSV file.", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="End the output with one JSON line of the summary.")] = False,
    resample_gt: Annotated[bool, typer.Option(
        help="Resample GT onto PRED's grid when the grids differ.")] = False,
    resample_method: Annotated[ResampleMethod, typer.Option(
        help="Interpolation for --resample-gt (SimpleITK).")] = ResampleMethod.linear,
) -> None:
    """PSNR and SSIM per slice, volume PSNR and MAE of PRED against GT on the same grid."""
    from medsr.errors import MedsrError
    from medsr.evaluation import evaluate as run_evaluation

    if csv is not None and csv.resolve() in {p.resolve() for p in (pred, gt, mask) if p}:
        fail(f"--csv {csv} would overwrite an input")
    try:
        result = run_evaluation(pred, gt, mask=mask, data_range=data_range, axis=axis,
                                resample_gt=resample_method.value if resample_gt else False)
        if csv is not None:
            result.write_csv(csv)
    except MedsrError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write {csv}: {err.strerror}")
    typer.echo(result.report())
    if csv is not None:
        typer.echo(f"per-slice metrics -> {csv}")
    if json_out:
        typer.echo(result.to_json())


def benchmark(
    hr_scan: Annotated[Path, typer.Argument(
        help="A thin-slice (high-resolution) scan: the truth.", show_default=False)],
    factor: Annotated[int, typer.Option(
        help="Thick-slice factor: slice spacing and thickness in HR voxels.",
        show_default=False)],
    axis: Annotated[int, typer.Option(help="Array axis to degrade and evaluate along.")] = 2,
    methods: Annotated[str, typer.Option(
        help="Comma-separated upscaling methods (names passed to medsr.upscale).")
    ] = "linear,bspline",
    profile: Annotated[ProfileShape, typer.Option(
        help="Slice profile of the low-resolution copy.")] = ProfileShape.box,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for CSVs and PNGs. Default: NAME_benchmark beside the scan.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Write into an existing output folder.")] = False,
) -> None:
    """Degrade HR_SCAN into thick slices, upscale it back with each method, and evaluate."""
    from medsr.errors import MedsrError
    from medsr.evaluation import benchmark as run_benchmark

    try:
        result = run_benchmark(hr_scan, factor, axis=axis, methods=methods.split(","),
                               profile=profile.value, out_dir=out, force=force)
    except MedsrError as err:
        fail(str(err))
    except OSError as err:
        fail(f"cannot write the benchmark outputs: {err.strerror or err}")
    first = next(iter(result.results.values()))
    lo, hi = first.data_range
    shape = "×".join(str(s) for s in result.shape)
    typer.echo(f"{hr_scan}: axis {result.axis}, ×{result.factor} ({result.profile} profile) "
               f"on {shape}" + (f" ({result.cropped} voxel{'s' * (result.cropped > 1)} "
                                f"dropped to make axis {result.axis} a multiple of "
                                f"{result.factor})" if result.cropped else ""))
    typer.echo(f"range [{lo:.6g}, {hi:.6g}] ({first.range_reason}); "
               f"MAE in {first.mask_source}")
    typer.echo(result.table())
    for path in result.files.values():
        typer.echo(f"-> {path}")
