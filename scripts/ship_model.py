"""Copy a trained run into the package as a shipped model, with a card that lists every
training and validation volume by name, source and licence, plus held-out results.

Usage::

    python scripts/ship_model.py runs/default-mr medsr/models/default_mr \\
        [--heldout docs/heldout/results.json]
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
}


def describe(paths: list[str]) -> list[dict]:
    return [{"file": Path(p).name, "source": SOURCES.get(Path(p).name, "unknown")}
            for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--heldout", type=Path)
    args = parser.parse_args()
    card = json.loads((args.run / "card.json").read_text())
    card["training_data"] = describe(card["training_data"])
    card["validation_data"] = describe(card["validation_data"])
    if args.heldout and args.heldout.is_file():
        card["heldout_results"] = json.loads(args.heldout.read_text())
    args.dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "weights.safetensors", args.dest / "weights.safetensors")
    shutil.copyfile(args.run / "config.yaml", args.dest / "config.yaml")
    (args.dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"shipped {args.run} -> {args.dest}")


if __name__ == "__main__":
    main()
