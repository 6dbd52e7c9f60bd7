"""The documentation: a short README, the MkDocs site builds strictly, and every command in
the README and the docs is one the ``medsr`` CLI accepts (or a script that exists)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from medsr.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index", "upscaling", "self-supervised", "batch", "training", "evaluation", "formats",
         "speed", "results", "report", "api", "fuse")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_commands(text: str) -> list[str]:
    """Commands of the ``bash`` blocks: continuations joined, ``&&`` split, comments off."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1:]
    return [c for c in commands if c]


def test_readme_is_short_and_keeps_the_setup_block():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 10 * 1024
    setup = readme.split("<!-- setup -->")[1].split("<!-- /setup -->")[0]
    assert setup.strip() == ('```bash\npip install "torch==2.13.0" -e ".[test]"\n'
                             "python -m pytest -q\n```")
    for page in PAGES:
        assert f"(docs/{page}.md)" in readme
        assert (ROOT / "docs" / f"{page}.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_in_the_docs_runs(doc):
    group = typer.main.get_command(app)
    for words in shell_commands(doc.read_text(encoding="utf-8")):
        if words[0] == "medsr":
            if words[1:] == ["--help"]:
                continue
            sub = group.get_command(group.context_class(group), words[1])
            assert sub is not None, f"{doc.name}: no command {words[1]!r} in {words}"
            try:  # parse and convert every argument and option, without running it
                sub.make_context(words[1], words[2:])
            except Exception as err:  # noqa: BLE001 - typer's own click: its exception classes by name
                if type(err).__name__ == "Exit" and getattr(err, "exit_code", 1) == 0:
                    continue
                message = err.format_message() if hasattr(err, "format_message") else err
                pytest.fail(f"{doc.name}: {shlex.join(words)}: {message}")
        elif words[0] == "python" and words[1] != "-m":
            assert (ROOT / words[1]).is_file(), f"{doc.name}: no script {words[1]}"
        elif words[0].startswith(("scripts/", "benchmarks/")):
            assert (ROOT / words[0]).is_file(), f"{doc.name}: no script {words[0]}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed")
    # Not -q: with it MkDocs neither prints nor counts warnings, and a strict build passes
    # with them. Every WARNING line (griffe's on a docstring included) fails the test.
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    log = done.stdout + done.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    assert done.returncode == 0, log
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "upscale_volume" in api and "write_report" in api
