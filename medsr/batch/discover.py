"""Find the inputs of a study tree and where their outputs go.

Every NIfTI, NRRD or MHA/MHD file is one input; DICOM files are grouped by
SeriesInstanceUID (headers only) and each series is one input, read from the deepest folder
that holds all its files. Hidden files, sidecars and other files are skipped and logged.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medsr.errors import MedsrError
from medsr.io import VOLUME_SUFFIXES, default_output

logger = logging.getLogger(__name__)

SIDECAR_SUFFIXES = (".json", ".bval", ".bvec", ".tsv")
#: sidecars copied beside an output (``x.json`` -> ``x_sr.json``)
COPIED_SIDECARS = (".json", ".bval", ".bvec")


@dataclass(frozen=True)
class Item:
    """One input of a batch and its output.

    Attributes:
        source: the volume file, or the folder of a DICOM series.
        rel: ``source`` relative to the root (POSIX), as written in the manifest.
        output: where the result goes.
        series_uid: the SeriesInstanceUID of a DICOM series.
        sidecars: BIDS sidecars of the input (``x.json``, ``x.bval``, ``x.bvec``).
        problem: why the input cannot be processed, found before any work (then an error row).
    """

    source: Path
    rel: str
    output: Path
    series_uid: str | None = None
    sidecars: tuple[Path, ...] = field(default=())
    problem: str | None = None


def volume_stem(name: str) -> tuple[str, str]:
    """``x.nii.gz -> ("x", ".nii.gz")``; ``("name", "")`` when no volume suffix matches."""
    lower = name.lower()
    for ext in VOLUME_SUFFIXES:
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return name, ""


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _matches(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatch.fnmatchcase(rel, p) for p in include):
        return False
    return not any(fnmatch.fnmatchcase(rel, p) for p in exclude)


def _common_folder(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def discover(root: Path, out: Path, *, fmt: str | None = None,
             include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Item]:
    """The inputs under ``root`` with their outputs under ``out`` (the tree mirrored).

    Args:
        root: the study folder (or a single volume file).
        out: the output folder; skipped when it lies inside ``root``.
        fmt: output format (``nifti``, ``dicom``, ``nrrd``, ``mha``); default the input's.
        include: glob patterns on the path relative to ``root``; an input must match one.
        exclude: glob patterns; an input matching any is left out.

    Raises:
        MedsrError: ``root`` does not exist.
    """
    from medsr.io.dicom import series_header

    root, out = Path(root).absolute(), Path(out).absolute()
    if not root.exists():
        raise MedsrError(f"{root}: no such file or folder")
    if root.is_file():
        return [Item(root, root.name, _file_output(out / root.name, fmt),
                     sidecars=_sidecars(root))]
    volumes: list[Path] = []
    series: dict[str, list[Path]] = {}
    broken: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in sorted(dirs):
            sub = here / name
            if name.startswith(".") or sub == out or sub.is_symlink():
                logger.info("skip %s/ (%s)", _rel(sub, root),
                            "the output folder" if sub == out else "hidden or a link")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            rel = _rel(path, root)
            _, suffix = volume_stem(name)
            if name.startswith("."):
                logger.info("skip %s (hidden)", rel)
            elif suffix:
                volumes.append(path)
            elif path.suffix.lower() in SIDECAR_SUFFIXES:
                logger.info("skip %s (sidecar)", rel)
            elif _looks_like_dicom(path):
                try:
                    header = series_header(path)
                except MedsrError as err:
                    broken.append((path, str(err)))
                    continue
                if header is None:
                    logger.info("skip %s (DICOM without an image)", rel)
                else:
                    series.setdefault(header[0], []).append(path)
            else:
                logger.info("skip %s (not an image)", rel)
    items = [Item(p, _rel(p, root), _file_output(out / _rel(p, root), fmt),
                  sidecars=_sidecars(p)) for p in volumes]
    items += _series_items(series, root, out, fmt)
    items += [Item(p, _rel(p, root), _file_output(out / _rel(p, root), fmt), problem=msg)
              for p, msg in broken]
    kept = []
    for item in items:
        if _matches(item.rel, include, exclude):
            kept.append(item)
        else:
            logger.info("skip %s (--include/--exclude)", item.rel)
    return _flag_collisions(sorted(kept, key=lambda i: (i.rel, i.series_uid or "")))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() or "."


def _file_output(target: Path, fmt: str | None) -> Path:
    """``sub/x.nii.gz -> sub/x_sr.nii.gz``; a DICOM file gives a series folder; ``fmt`` wins."""
    return default_output(target, fmt, target.parent)


def _sidecars(path: Path) -> tuple[Path, ...]:
    stem, _ = volume_stem(path.name)
    found = (path.with_name(stem + ext) for ext in COPIED_SIDECARS)
    return tuple(p for p in found if p.is_file())


def _series_items(series: dict[str, list[Path]], root: Path, out: Path,
                  fmt: str | None) -> list[Item]:
    """One item per series; several series in one folder get a number or UID suffix."""
    import pydicom

    by_folder: dict[Path, list[str]] = {}
    for uid, files in series.items():
        by_folder.setdefault(_common_folder(files), []).append(uid)
    items = []
    for folder, uids in by_folder.items():
        rel = _rel(folder, root)
        base = root.name if rel == "." else folder.name
        numbers = {}
        if len(uids) > 1:
            for uid in uids:
                ds = pydicom.dcmread(series[uid][0], stop_before_pixels=True,
                                     specific_tags=["SeriesNumber"])
                numbers[uid] = str(ds.get("SeriesNumber", "") or "")
        for uid in sorted(uids):
            name = base
            if len(uids) > 1:
                unique = numbers[uid] and list(numbers.values()).count(numbers[uid]) == 1
                name += f"_s{numbers[uid]}" if unique else f"_{uid}"
            parent = out if rel == "." else out / Path(rel).parent
            items.append(Item(folder, rel, parent / f"{name}_sr{_suffix_for(fmt)}",
                              series_uid=uid))
    return items


def _suffix_for(fmt: str | None) -> str:
    return {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}.get(fmt or "dicom", "")


def _flag_collisions(items: list[Item]) -> list[Item]:
    """Two inputs may not write the same output (``x.nii`` and ``x.nii.gz``): the later errs."""
    seen: dict[Path, str] = {}
    result = []
    for item in items:
        if item.output in seen and item.problem is None:
            item = replace(item, problem=f"output {item.output.name} is also the output of "
                                         f"{seen[item.output]}")
        seen.setdefault(item.output, item.rel)
        result.append(item)
    return result
