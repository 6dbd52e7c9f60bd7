"""What the package needs to run is what it declares: every module ``medsr`` imports is the
standard library's, a dependency in ``pyproject.toml`` (or an optional extra's, imported where
it is used), so an installed wheel works without the test extras."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import names of distributions whose module is named otherwise
MODULES = {"pyyaml": "yaml", "python-gdcm": "gdcm", "simpleitk": "SimpleITK",
           "dask-jobqueue": "dask_jobqueue", "pillow": "PIL"}
#: pulled in by a declared dependency and used through it (matplotlib needs Pillow; distributed
#: serves its dashboard with bokeh when present)
INDIRECT = {"PIL", "bokeh"}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = list(project["dependencies"])
    for extra in ("train", "cluster", "dicom"):  # not "test": the suite's own tools
        names += extras[extra]
    dists = {re.split(r"[<>=!~\[ ;]", n, maxsplit=1)[0].lower() for n in names}
    return {MODULES.get(d, d.replace("-", "_")) for d in dists}


def imported() -> dict[str, str]:
    """Top-level module -> the first file of ``medsr`` importing it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "medsr").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_the_library_imports_only_what_it_declares():
    allowed = declared() | set(sys.stdlib_module_names) | INDIRECT | {"medsr"}
    undeclared = {m: f for m, f in imported().items() if m not in allowed}
    assert not undeclared, f"imported but not a dependency of medsr: {undeclared}"
