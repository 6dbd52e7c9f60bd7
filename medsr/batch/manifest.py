"""``manifest.csv``: one row per input, appended and flushed as each one completes."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Self

COLUMNS = ("input", "series_uid", "output", "uncertainty", "status", "method", "seconds",
           "shape_in", "spacing_in", "shape_out", "spacing_out", "error")
#: what a skipped input keeps from the row of the run that produced its output
KEPT_ON_SKIP = ("uncertainty", "method", "shape_in", "spacing_in", "shape_out", "spacing_out")


def key(row: dict) -> tuple[str, str]:
    """Rows are identified by input path and series UID."""
    return row.get("input", ""), row.get("series_uid", "") or ""


def read_manifest(path: Path) -> dict[tuple[str, str], dict]:
    """The rows of an earlier manifest by :func:`key`; empty when there is none or it is bad."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {key(row): row for row in csv.DictReader(f)}
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}


class Manifest:
    """A CSV written row by row so that it is true after a crash; sorted when closed.

    Example:
        >>> with Manifest(out / "manifest.csv") as manifest:   # doctest: +SKIP
        ...     manifest.add({"input": "a.nii.gz", "status": "ok"})
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")
        self._writer.writeheader()
        self._sync()

    def add(self, row: dict) -> None:
        """Append one row (values as the CSV text) and push it to disk."""
        row = {c: "" if row.get(c) is None else str(row[c]) for c in COLUMNS}
        self.rows.append(row)
        self._writer.writerow(row)
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Rewrite the rows sorted by input (atomically) and close the file."""
        if self._file.closed:
            return
        self._file.close()
        write_rows(self.path, sorted(self.rows, key=key))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    """Write a manifest in one go under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
