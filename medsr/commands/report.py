"""``medsr report OUTPUT --input INPUT``: the visual QC page of any pair of volumes, after the
fact (the same page as ``medsr upscale --report``, less what only the run knew)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medsr.commands import fail
from medsr.report.scan import report_path

__all__ = ["check_report_path", "recorded", "report", "report_path"]


def check_report_path(path: Path, force: bool) -> None:
    """Refuse (:class:`~medsr.errors.MedsrError`), before any work, a report path that exists
    (without ``force``), is not ``.html``, or whose folder is missing."""
    from medsr.errors import MedsrError

    if path.suffix.lower() not in (".html", ".htm"):
        raise MedsrError(f"--report {path}: the report is an HTML file; name it .html")
    if path.exists() and not force:
        raise MedsrError(f"{path} exists; pass --force to replace it")
    if not path.absolute().parent.is_dir():
        raise MedsrError(f"folder {path.absolute().parent} does not exist")


def recorded(volume) -> None:
    """Fill ``medsr_method``, ``medsr_slice_profile`` and ``medsr_version`` of a volume read
    from disk from the note medsr stored in its header (:meth:`~medsr.io.meta.SourceInfo.
    made_by`: NIfTI descrip/comment, NRRD/MHA key, DICOM DerivationDescription)."""
    from medsr.io.meta import SOURCE_KEY

    source = volume.meta.get(SOURCE_KEY)
    note = source.made_by() if source is not None else None
    if note is None:
        return
    parts = [p.strip() for p in note.removeprefix("medsr ").split(";")]
    version, _, method = parts[0].partition(" ")
    if method and version[:1].isdigit():  # "0.7.0 bspline"; notes before 0.7 have no version
        volume.meta["medsr_version"] = version
    else:
        method = parts[0]
    volume.meta["medsr_method"] = method
    for part in parts[1:]:
        words = part.split()
        if len(words) == 2 and words[0] in ("box", "gaussian") and words[1].endswith("x"):
            try:
                volume.meta["medsr_slice_profile"] = {"kind": words[0],
                                                      "width": float(words[1][:-1])}
            except ValueError:
                pass


def report(
    output: Annotated[Path, typer.Argument(help="The upscaled volume (any format medsr reads).",
                                           show_default=False)],
    input: Annotated[Path, typer.Option(
        "--input", "-i", help="The volume it was made from.", show_default=False)],
    uncertainty: Annotated[Optional[Path], typer.Option(
        help="Its uncertainty (sd) map, shown over the output.", show_default=False)] = None,
    to: Annotated[Optional[Path], typer.Option(
        "-o", "--report", help="The HTML file to write. Default: OUTPUT's name with .html, "
                               "beside it.", show_default=False)] = None,
    series: Annotated[Optional[str], typer.Option(
        help="SeriesInstanceUID of the input in a DICOM folder with several.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing report.")] = False,
) -> None:
    """Make the visual QC page (views, profile, facts) of an upscaled volume and its input."""
    import medsr
    from medsr.errors import MedsrError
    from medsr.report import RunInfo, write_report

    path = to if to is not None else report_path(output)
    try:
        check_report_path(path, force)
        volume = medsr.load_volume(input, series_uid=series)
        result = medsr.load_volume(output)
        recorded(result)
        sd = medsr.load_volume(uncertainty) if uncertainty is not None else None
        write_report(path, volume, result, sd, RunInfo(input_name=input.name,
                                                       output_name=output.name))
    except MedsrError as err:
        fail(str(err))
    typer.echo(str(path))
