"""Copy a trained run into the package as a shipped model, with a card that lists every
training and validation volume by name, source and licence, plus held-out results.

Usage::

    python scripts/ship_model.py runs/default-mr medsr/models/default_mr \\
        [--heldout docs/heldout/results.json] [--last]

``--last`` ships the run's latest weights (from its training state) instead of the
best-validation ones, e.g. when the validation patches are not representative, or to try a
run while it trains.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

#: file name -> where it comes from (see ../shared/DATA.md and scripts/get_data.sh)
SOURCES = {
    "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz":
        "MNI ICBM152 2009a T1 template, 1 mm; PyPI nilearn wheel; BSD-3 / MNI licence",
    "colin27_t1.nii.gz": "Colin27 T1 (27 averaged scans), 1 mm; Debian mricron-data; BSD-3",
    "mean_reg2mean.nii.gz": "pydeface mean head T1, ~1 mm; PyPI pydeface wheel; MIT",
    "brain1_image.nrrd": "pyradiomics brain1, clinical T1 post-contrast, 0.78 mm in-plane, "
                         "6.5 mm slices (in-plane patches); PyPI pyradiomics 3.0.1 sdist; BSD-3",
    "brain2_image.nrrd": "pyradiomics brain2, clinical T1 post-contrast, 0.78 mm in-plane, "
                         "6.5 mm slices; PyPI pyradiomics 3.0.1 sdist; BSD-3",
    "lung1_image.nrrd": "pyradiomics lung1, chest CT, 0.57 mm in-plane, 5 mm slices "
                        "(in-plane patches); PyPI pyradiomics 3.0.1 sdist; BSD-3",
    "lung2_image.nrrd": "pyradiomics lung2, chest CT, 0.63 mm in-plane, 5 mm slices; "
                        "PyPI pyradiomics 3.0.1 sdist; BSD-3",
    "ct_brain_atlas_1mm.nii.gz": "TotalSegmentator CT head atlas, 1 mm; PyPI totalsegmentator "
                                 "wheel; Apache-2.0",
    "inia19_macaque_t1_brain_0p5mm.nii.gz": "INIA19 macaque T1 brain template (19 animals), "
                                            "0.5 mm; Debian mricron-data; BSD-3",
    "breast1_image.nrrd": "pyradiomics breast1, clinical breast MR, 0.66 mm in-plane, 2.1 mm "
                          "slices (in-plane patches); PyPI pyradiomics 3.0.1 sdist; BSD-3",
    "totalseg_cta_chest_1p5mm.nii.gz": "TotalSegmentator test CT angiography of chest and "
                                       "upper abdomen, one patient, 1.5 mm; PyPI "
                                       "totalsegmentator sdist (tests/reference_files); "
                                       "Apache-2.0",
}


def describe(paths: list[str]) -> list[dict]:
    return [{"file": Path(p).name, "source": SOURCES.get(Path(p).name, "unknown")}
            for p in paths]


def _card_from_config(run: Path) -> dict:
    """A card for a run that has not saved a model yet (its config and data)."""
    import yaml

    from medsr.training.data import find_volumes
    from medsr.transforms.intensity import default_normalization

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    net = cfg["network"]
    factors = cfg["degradation"]["factor"]
    lo, hi = (factors, factors) if isinstance(factors, int) else factors
    axes = int(cfg["degradation"].get("axes", 1))
    scale = [lo, lo] if axes == 2 else [1, lo]
    extra = {"lr_axes": 2} if axes == 2 else {}
    return {"network": {"name": net["name"], "spatial_dims": net["spatial_dims"],
                        "scale": scale, "in_channels": 1, "factors": [lo, hi],
                        **net.get("params", {}), **extra},
            "scale": scale, "spatial_dims": net["spatial_dims"], "input": net["input"],
            "interpolation": net["interpolation"], "factors": [lo, hi], "lr_axes": axes,
            "modality": cfg["data"]["modality"],
            "normalization": cfg["data"].get("normalization")
            or default_normalization(cfg["data"]["modality"]),
            "degradation": cfg["degradation"],
            "training_data": [str(p) for p in find_volumes(cfg["data"]["train"])],
            "validation_data": [str(p) for p in find_volumes(cfg["data"]["val"])]
            if cfg["data"]["val"] else [], "validation": None,
            "experiment": cfg["name"], "seed": cfg["seed"]}


def _write_last_weights(run: Path, dest: Path, card: dict) -> None:
    """The model weights of the run's training state (its latest checkpoint): their moving
    average when the run keeps one (``optim.ema``)."""
    from safetensors.torch import save_file

    from medsr.checkpoint import latest_weights

    save_file(latest_weights(run), str(dest))
    state = json.loads((run / "state.json").read_text())
    card["steps"] = state["step"]
    card["validation"] = {"selection": "latest weights (--last)", "history": state["history"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--heldout", type=Path)
    parser.add_argument("--last", action="store_true", help="the latest weights, not the best")
    args = parser.parse_args()
    card = json.loads((args.run / "card.json").read_text()) \
        if (args.run / "card.json").is_file() else _card_from_config(args.run)
    card["training_data"] = describe(card["training_data"])
    card["validation_data"] = describe(card["validation_data"])
    if args.heldout and args.heldout.is_file():
        card["heldout_results"] = json.loads(args.heldout.read_text())
    args.dest.mkdir(parents=True, exist_ok=True)
    if args.last:
        _write_last_weights(args.run, args.dest / "weights.safetensors", card)
    else:
        shutil.copyfile(args.run / "weights.safetensors", args.dest / "weights.safetensors")
    shutil.copyfile(args.run / "config.yaml", args.dest / "config.yaml")
    if (args.run / "metrics.jsonl").is_file():  # the training log, for reproducibility
        shutil.copyfile(args.run / "metrics.jsonl", args.dest / "metrics.jsonl")
    (args.dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"shipped {args.run} -> {args.dest}")


if __name__ == "__main__":
    main()
