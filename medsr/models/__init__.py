"""Models shipped inside the package (see README.md beside this file for their cards)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).parent
#: modality -> folder of the default (through-plane) model for it
DEFAULT_MODELS = {"MR": "default_mr", "CT": "default_ct"}
#: modality -> folder of the default in-plane model (both axes of the plane)
INPLANE_MODELS = {"MR": "default_mr_inplane", "CT": "default_ct_inplane"}
#: modality -> folder of the through-plane model for coarse planes (EPI, low-resolution
#: series): the MR model fine-tuned on real scanners, which gains more on them than the
#: default (a blend that keeps the templates' denoising) and less on fine 1 mm templates
COARSE_MODELS = {"MR": "default_mr_coarse"}
#: in-plane pixel (mm, the finer of the plane's two) from which :data:`COARSE_MODELS` serve
COARSE_PIXEL_MM = 1.5


def default_model(modality: str, kind: str = "through", pixel_mm: float | None = None
                  ) -> Path | None:
    """The shipped default model folder for ``"MR"`` or ``"CT"`` (``kind``: ``"through"``
    for one thick axis, ``"inplane"`` for both axes of the plane), or None if not shipped.
    A through-plane request whose planes have ``pixel_mm`` of :data:`COARSE_PIXEL_MM` or more
    gets the coarse model of its modality where one ships."""
    names = INPLANE_MODELS if kind == "inplane" else DEFAULT_MODELS
    if kind == "through" and pixel_mm is not None and pixel_mm >= COARSE_PIXEL_MM \
            and modality in COARSE_MODELS:
        names = COARSE_MODELS
    folder = MODELS_DIR / names.get(modality, "")
    return folder if (folder / "weights.safetensors").is_file() else None
