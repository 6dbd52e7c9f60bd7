"""Check what a built medsr sdist and wheel carry, before anyone installs them.

Usage: ``python scripts/check_dist.py DIST_DIR`` (after ``python -m build --outdir DIST_DIR``).
Each must hold every shipped model's weights, card and config, the sample scan and the
licences; neither may hold tests, benchmarks, notebooks, data caches or training runs. Prints
the wheel's size and contents by folder; exits 1 with one line per problem.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

REQUIRED = ["medsr/__init__.py", "medsr/cli.py", "medsr/data/mr_brain_t1c.nrrd",
            "medsr/data/LICENSE-pyradiomics.txt", "medsr/models/LICENSE-training-data.txt"]
MODEL_FILES = ("weights.safetensors", "card.json", "config.yaml")
FORBIDDEN = re.compile(r"(^|/)(tests|benchmarks|notebooks|data_cache|runs|\.venv|\.git)/"
                       r"|\.pyc$|(^|/)__pycache__/")


def models(root: Path) -> list[str]:
    """The shipped model folders of the checkout (each must travel in full)."""
    return sorted(p.name for p in (root / "medsr" / "models").iterdir()
                  if (p / "weights.safetensors").is_file())


def problems(names: list[str], kind: str, version: str, model_names: list[str]) -> list[str]:
    """What is missing from, or must not be in, one archive's file list."""
    found = set(names)
    need = REQUIRED + [f"medsr/models/{m}/{f}" for m in model_names for f in MODEL_FILES]
    if kind == "wheel":
        need.append(f"medsr-{version}.dist-info/licenses/LICENSE")
    else:
        need += ["LICENSE", "pyproject.toml", "CHANGELOG.md"]
    out = [f"{kind}: missing {n}" for n in need if n not in found]
    out += [f"{kind}: must not ship {n}" for n in names if FORBIDDEN.search(n)]
    return out


def main(dist: Path) -> int:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from medsr import __version__

    wheels = sorted(dist.glob(f"medsr-{__version__}-*.whl"))
    sdists = sorted(dist.glob(f"medsr-{__version__}.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"error: expected one wheel and one sdist of medsr {__version__} in {dist}")
        return 1
    with zipfile.ZipFile(wheels[0]) as z:
        wheel = [i.filename for i in z.infolist() if not i.is_dir()]
    with tarfile.open(sdists[0]) as t:
        prefix = f"medsr-{__version__}/"
        sdist = [m.name.removeprefix(prefix) for m in t.getmembers() if m.isfile()]
    names = models(root)
    found = problems(wheel, "wheel", __version__, names) + problems(sdist, "sdist",
                                                                     __version__, names)
    size = wheels[0].stat().st_size
    print(f"{wheels[0].name}: {size / 2**20:.1f} MiB, {len(wheel)} files; "
          f"{sdists[0].name}: {sdists[0].stat().st_size / 2**20:.1f} MiB, {len(sdist)} files")
    for folder, count in sorted(Counter(n.rsplit("/", 1)[0] for n in wheel).items()):
        print(f"  {folder}/: {count}")
    for line in found:
        print(f"error: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python scripts/check_dist.py DIST_DIR")
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
