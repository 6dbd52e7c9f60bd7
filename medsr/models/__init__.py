"""Models shipped inside the package (see README.md beside this file for their cards)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent
#: modality -> folder of the default model for it
DEFAULT_MODELS = {"MR": "default_mr", "CT": "default_ct"}


def default_model(modality: str) -> Path | None:
    """The shipped default model folder for ``"MR"`` or ``"CT"``, or None if not shipped."""
    folder = MODELS_DIR / DEFAULT_MODELS.get(modality, "")
    return folder if (folder / "weights.safetensors").is_file() else None
