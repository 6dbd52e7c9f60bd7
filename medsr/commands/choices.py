"""The choices that several commands share (Typer enums), defined once."""

from __future__ import annotations

from enum import Enum


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


class Format(str, Enum):
    nifti = "nifti"
    dicom = "dicom"
    nrrd = "nrrd"
    mha = "mha"
