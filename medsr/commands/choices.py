"""The choices and options that several commands share, defined once."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

#: ``--scale SX SY SZ`` (``medsr upscale``, ``medsr batch``)
Scale = Annotated[Optional[tuple[float, float, float]], typer.Option(  # noqa: UP045 - Typer
    help="Integer factor per stored array axis, e.g. 1 1 3. "
         "Default: each spacing brought down to the smallest.", show_default=False)]
#: ``--spacing X Y Z``
Spacing = Annotated[Optional[tuple[float, float, float]], typer.Option(  # noqa: UP045
    help="Target spacing in mm per array axis (instead of --scale).", show_default=False)]


class Method(str, Enum):
    auto = "auto"
    default = "default"
    self_supervised = "self-supervised"
    bspline = "bspline"
    linear = "linear"


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
