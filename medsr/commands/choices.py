"""The choices and options that several commands share, defined once."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

#: ``--scale SX SY SZ`` (``medsr upscale``, ``medsr batch``)
Scale = Annotated[Optional[tuple[float, float, float]], typer.Option(  # noqa: UP045 - Typer
    help="Integer factor per stored array axis, e.g. 1 1 3. "
         "Default: each spacing brought down to the smallest.", show_default=False)]


def spacing_option(text: str):  # an Annotated type, for Typer
    """``--spacing X Y Z``: declared once, its help told by each command."""
    return Annotated[Optional[tuple[float, float, float]], typer.Option(  # noqa: UP045
        help=text, show_default=False)]


#: ``--spacing X Y Z`` (``medsr upscale``, ``medsr batch``)
Spacing = spacing_option("Target spacing in mm per array axis (instead of --scale).")
#: ``--spacing X Y Z`` of ``medsr fuse``: the grid's, along the first stack's axes
GridSpacing = spacing_option("Grid spacing in mm along each array axis of the first stack "
                             "(instead of --isotropic).")


class Method(str, Enum):
    auto = "auto"
    default = "default"
    self_supervised = "self-supervised"
    bspline = "bspline"
    linear = "linear"


class Precision(str, Enum):
    """The networks' arithmetic (:func:`medsr.runtime.precision`)."""

    auto = "auto"
    fp32 = "fp32"


#: ``--precision`` (``medsr upscale``)
PrecisionOption = Annotated[Optional[Precision], typer.Option(  # noqa: UP045 - Typer
    help="Networks' arithmetic: auto (bfloat16 where the CPU or GPU computes it natively, "
         "float32 elsewhere) or fp32 (float32 everywhere). Default: $MEDSR_PRECISION, "
         "else auto.", show_default=False)]


class Modality(str, Enum):
    ct = "ct"
    mr = "mr"


class Profile(str, Enum):
    auto = "auto"
    box = "box"
    gaussian = "gaussian"


class ProfileShape(str, Enum):
    """A slice-profile shape given outright (``medsr evaluate`` degrades with it)."""

    box = "box"
    gaussian = "gaussian"


class ResampleMethod(str, Enum):
    """Interpolation of a reference onto another grid (``medsr evaluate --resample-gt``)."""

    linear = "linear"
    bspline = "bspline"


class Format(str, Enum):
    nifti = "nifti"
    dicom = "dicom"
    nrrd = "nrrd"
    mha = "mha"

#: ``--format`` of the commands that write one output named by ``-o``
OutputFormat = Annotated[Optional[Format], typer.Option(
    "--format", help="Output format (default: from the output name; a folder is DICOM).",
    show_default=False)]
