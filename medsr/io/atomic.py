"""Atomic output: write beside the target under a temporary name, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medsr.errors import MedsrError


def check_output(path: Path, inputs: list[Path], force: bool) -> None:
    """Refuse an output that is an input, exists without ``force``, or cannot be written."""
    resolved = path.resolve()
    for src in inputs:
        src_r = src.resolve()
        if resolved == src_r or (src_r.is_dir() and src_r in resolved.parents) or \
                (resolved.is_dir() and resolved in src_r.parents):
            raise MedsrError(f"output {path} would overwrite the input {src}")
    if path.exists() and not force:
        raise MedsrError(f"output {path} exists; pass --force to replace it")
    parent = resolved.parent
    if not parent.is_dir():
        raise MedsrError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MedsrError(f"output folder {parent} is not writable")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path named like ``path``; move it (and companions) into place on success.

    Writers write to the yielded path (a file, a folder, or a header plus data files such as
    ``.mhd``/``.raw``). Nothing is left behind when the writer fails. An existing output is
    replaced only after the new one is complete.
    """
    parent = path.resolve().parent
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    except OSError as err:
        raise MedsrError(f"cannot write to {parent}: {err.strerror}") from None
    try:
        target = tmp_dir / path.name
        yield target
        written = sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name)  # main file last
        for item in written:
            _replace(item, parent / item.name)
    except OSError as err:
        raise MedsrError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _replace(src: Path, dst: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        backup = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(dst, backup)
        os.replace(src, dst)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(src, dst)
