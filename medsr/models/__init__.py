"""Models shipped inside the package (see README.md beside this file for their cards)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent
#: modality -> folder of the default (through-plane) model for it
DEFAULT_MODELS = {"MR": "default_mr", "CT": "default_ct"}
#: modality -> folder of the default in-plane model (both axes of the plane)
INPLANE_MODELS = {"MR": "default_mr_inplane", "CT": "default_ct_inplane"}


def default_model(modality: str, kind: str = "through") -> Path | None:
    """The shipped default model folder for ``"MR"`` or ``"CT"`` (``kind``: ``"through"``
    for one thick axis, ``"inplane"`` for both axes of the plane), or None if not shipped."""
    names = INPLANE_MODELS if kind == "inplane" else DEFAULT_MODELS
    folder = MODELS_DIR / names.get(modality, "")
    return folder if (folder / "weights.safetensors").is_file() else None
