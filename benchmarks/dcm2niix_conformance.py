"""Conformance with dcm2niix on its authors' QA corpus: every series, as a user would read it.

A session step, never CI. For each repository of ``neurolabusc/dcm_qa*`` that the session's
``fetch`` brought (git snapshots under ``/work/.mirror/neurolabusc+<repo>/repo``), the ``In/``
folder is extracted to ``/work/data/dcm_qa/<repo>/`` (snapshots leave out files of 4 MiB or
more: each absent file is listed), converted with dcm2niix (the Debian package:
``apt-get install dcm2niix``) and read with medsr (``medsr.load_volume(folder,
series_uid=...)``, one call per series, the folder's headers scanned once for all of them).
Each dcm2niix output is matched to the medsr image of the same series (and echo / image type),
then compared: the 8 outer corners in world space (mm), the values at dcm2niix's voxel centres
(Pearson r per volume) and the number of volumes; diffusion b-values are compared with
dcm2niix's ``.bval`` where both have them.

Usage::

    python benchmarks/dcm2niix_conformance.py extract            # In/ folders -> /work/data
    python benchmarks/dcm2niix_conformance.py run [REPO ...]     # -> results JSON + table
    python benchmarks/dcm2niix_conformance.py table RESULTS.json # the markdown table

The run writes ``/work/data/dcm_qa/results.json`` and prints the per-repository table that
docs/formats.md carries.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

MIRROR = Path("/work/.mirror")
DATA = Path("/work/data/dcm_qa")
REPOS = ("dcm_qa", "dcm_qa_nih", "dcm_qa_ge", "dcm_qa_stc", "dcm_qa_philips", "dcm_qa_canon_61",
         "dcm_qa_toshiba", "dcm_qa_fmap", "dcm_qa_enh", "dcm_qa_mosaic", "dcm_qa_xa60",
         "dcm_qa_polar", "dcm_qa_decubitus", "dcm_qa_agfa", "dcm_qa_ts", "dcm_qa_12bit",
         "dcm_qa_uih")


# ------------------------------------------------------------------------------- extraction
def extract(repo: str) -> dict:
    """Write the DICOM input files of ``repo``'s snapshot to ``DATA/repo``; returns the counts
    and the paths of the files the snapshot lacks (4 MiB or more)."""
    git_dir = MIRROR / f"neurolabusc+{repo}" / "repo"
    if not git_dir.is_dir():
        return {"repo": repo, "missing_snapshot": True}
    listing = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-l", "HEAD"],
                             check=True, capture_output=True, text=True).stdout
    entries = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, sha, size = meta.split()
        if kind != "blob" or mode == "120000":
            continue
        top = path.split("/", 1)[0]
        # the inputs: In/ (most repositories) or the vendor folders (dcm_qa_agfa)
        if top in ("Ref", ".github") or "/" not in path or path.endswith((".nii", ".nii.gz",
                                                                         ".bval", ".bvec",
                                                                         ".json", ".sh")):
            continue
        entries.append((path, sha, int(size) if size.isdigit() else None))
    out = DATA / repo
    absent = []
    written = 0
    batch = subprocess.Popen(["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for path, sha, size in entries:
        if size is None:  # an object the snapshot lacks ("BAD" size)
            absent.append({"path": path, "bytes": None})
            continue
        batch.stdin.write(f"{sha}\n".encode())
        batch.stdin.flush()
        header = batch.stdout.readline().decode().split()
        if len(header) < 2 or header[1] == "missing":
            absent.append({"path": path, "bytes": size})
            continue
        data = batch.stdout.read(int(header[2]))
        batch.stdout.read(1)
        target = out / path
        if path.endswith(".gz"):  # dcm_qa_canon_61 ships gzipped files; its script unzips
            data, target = gzip.decompress(data), out / path[:-3]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.stat().st_size != len(data):
            target.write_bytes(data)
        written += 1
    batch.stdin.close()
    batch.wait()
    return {"repo": repo, "files": written, "absent": absent}


# ------------------------------------------------------------------------------- dcm2niix
def run_dcm2niix(repo: str, out: Path) -> float:
    """Convert every series of ``DATA/repo`` with dcm2niix into ``out`` (``<uid>_<series>``
    names, uncompressed, with JSON sidecars); returns the seconds it took."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    start = time.perf_counter()
    log = subprocess.run(["dcm2niix", "-z", "n", "-b", "y", "-ba", "n", "-f", "%j_%s", "-o",
                          str(out), str(DATA / repo)], capture_output=True, text=True,
                         check=False)
    (out.parent / "dcm2niix.log").write_text(log.stdout + log.stderr)
    return time.perf_counter() - start


def dcm2niix_outputs(out: Path) -> dict[str, list[dict]]:
    """dcm2niix's images by SeriesInstanceUID: path, sidecar, suffix, b-values."""
    found: dict[str, list[dict]] = defaultdict(list)
    for nii in sorted(out.glob("*.nii")):
        uid, _, rest = nii.stem.partition("_")
        side = nii.with_suffix(".json")
        sidecar = json.loads(side.read_text()) if side.is_file() else {}
        bval = nii.with_suffix(".bval")
        suffix = rest.partition("_")[2]
        found[uid].append({"path": nii, "sidecar": sidecar, "suffix": suffix,
                           "bval": [float(v) for v in bval.read_text().split()]
                           if bval.is_file() else None})
    return found


# ------------------------------------------------------------------------------- series
def scan_series(repo: str) -> dict[str, dict]:
    """Every image series under ``DATA/repo`` (pydicom headers, independent of medsr):
    SeriesInstanceUID -> files, common folder, description, manufacturer."""
    import pydicom

    series: dict[str, dict] = {}
    for file in sorted(p for p in (DATA / repo).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True,
                                 specific_tags=["SeriesInstanceUID", "SeriesDescription",
                                                "Manufacturer", "Rows", "SeriesNumber",
                                                "SOPClassUID", "NumberOfFrames"])
        except Exception:  # noqa: BLE001, S112 - not DICOM
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            continue
        # classic and enhanced copies of one series (dcm_qa_canon_61: In/cl, In/enh) are
        # read as a user would, each from its own folder; dcm2niix writes both (_a)
        enhanced = int(ds.get("NumberOfFrames", 1) or 1) > 1 or "Enhanced" in str(
            getattr(ds.get("SOPClassUID"), "name", ""))
        key = f"{uid}#enhanced" if enhanced else uid
        entry = series.setdefault(key, {"uid": uid, "files": [], "description": str(
            ds.get("SeriesDescription", "") or ""), "manufacturer": str(
            ds.get("Manufacturer", "") or ""), "number": str(ds.get("SeriesNumber", "") or "")})
        entry["files"].append(file)
    for key in [k for k in series if k.endswith("#enhanced")]:
        uid = series[key]["uid"]
        if uid in series:
            series[uid]["copies"] = series[key]["copies"] = True
        else:
            series[uid] = series.pop(key)
    for entry in series.values():
        parts = [f.parent.parts for f in entry["files"]]
        common = []
        for level in zip(*parts):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        entry["folder"] = Path(*common)
    return series


def corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (8, 3) of the outer corners of a grid's voxels."""
    idx = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in shape[:3]])))
    return (affine[:3, :3] @ idx.T).T + affine[:3, 3]


def compare(ours: np.ndarray, affine: np.ndarray, nii: Path) -> dict:
    """medsr's ``(T, X, Y, Z)`` RAS volume against one dcm2niix NIfTI."""
    import nibabel as nib

    img = nib.load(str(nii))
    theirs = np.asanyarray(img.dataobj).astype(np.float64)
    while theirs.ndim > 4 and theirs.shape[-1] == 1:
        theirs = theirs[..., 0]
    if theirs.ndim == 2:
        theirs = theirs[..., None]
    theirs = theirs.reshape(*theirs.shape[:3], -1)
    result = {"medsr_volumes": int(ours.shape[0]), "dcm2niix_volumes": int(theirs.shape[3]),
              "medsr_shape": list(ours.shape[1:]), "dcm2niix_shape": list(theirs.shape[:3])}
    a, b = corners(affine, ours.shape[1:]), corners(img.affine, theirs.shape[:3])
    result["corner_mm"] = float(max(np.linalg.norm(b - c, axis=1).min() for c in a))
    # dcm2niix voxel centres -> medsr indices (a sample of at most 200k voxels)
    ijk = np.indices(theirs.shape[:3]).reshape(3, -1)
    if ijk.shape[1] > 200_000:
        ijk = ijk[:, np.random.default_rng(0).choice(ijk.shape[1], 200_000, replace=False)]
    mapping = np.linalg.solve(affine, img.affine)
    target = mapping[:3, :3] @ ijk + mapping[:3, 3:4]
    rounded = np.rint(target).astype(int)
    inside = np.all((rounded >= 0) & (rounded < np.array(ours.shape[1:])[:, None]), axis=0)
    result["inside"] = float(inside.mean())
    result["off_grid"] = float(np.abs(target - rounded)[:, inside].max()) if inside.any() \
        else None
    rs = []
    for t in range(min(ours.shape[0], theirs.shape[3])):
        x = ours[t][tuple(rounded[:, inside])].astype(np.float64)
        y = theirs[(*ijk[:, inside], t)]
        if x.std() == 0 or y.std() == 0:
            rs.append(1.0 if np.allclose(x - x.mean(), y - y.mean()) else 0.0)
        else:
            rs.append(float(np.corrcoef(x, y)[0, 1]))
    result["r_min"] = min(rs) if rs else None
    result["r_worst_volume"] = int(np.argmin(rs)) if rs else None
    return result


def _world_bvecs(bvec: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """FSL b-vectors ``(3, T)`` of an image with this RAS affine as world (LPS) vectors."""
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    vecs = np.array(bvec, dtype=np.float64)
    if np.linalg.det(affine[:3, :3]) > 0:
        vecs[0] = -vecs[0]
    return ((axes @ vecs).T * [-1, -1, 1]).T


def compare_tables(pick: dict, output: dict) -> dict:
    """Diffusion directions (as world vectors, sign free) and slice times against
    dcm2niix's .bvec and SliceTiming."""
    import nibabel as nib

    result: dict = {}
    labels = pick.get("_labels") or []
    bvec_path = output["path"].with_suffix(".bvec")
    if bvec_path.is_file() and labels and len(labels) == len(output["bval"] or []):
        theirs = _world_bvecs(np.loadtxt(bvec_path).reshape(3, -1),
                              nib.load(str(output["path"])).affine)
        worst = 1.0
        for item, vec in zip(labels, theirs.T):
            ours = np.asarray(item.get("DiffusionGradientOrientation") or (0, 0, 0), float)
            if (item.get("DiffusionBValue") or 0) > 0 and np.linalg.norm(vec) > 0.5 \
                    and np.linalg.norm(ours) > 0.5:
                worst = min(worst, abs(float(ours @ vec)) / np.linalg.norm(ours) /
                            np.linalg.norm(vec))
        result["bvec_min_abs_cos"] = round(worst, 5)
    timing = pick.get("_timing")
    theirs_t = output["sidecar"].get("SliceTiming")
    if timing and theirs_t and len(timing) == len(theirs_t):
        _, affine = pick["_data"]
        img = nib.load(str(output["path"]))
        to_theirs = np.linalg.solve(img.affine, affine)
        slices = [round((to_theirs @ [0, 0, k, 1])[2]) for k in range(len(timing))]
        if sorted(slices) == list(range(len(timing))):
            result["slice_timing_max_diff_s"] = round(max(
                abs(timing[k] - theirs_t[j]) for k, j in enumerate(slices)), 4)
    elif theirs_t:
        result["slice_timing_max_diff_s"] = None  # dcm2niix has times, medsr none
    return result


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_TYPES = {"P": "phase", "PHASE": "phase", "R": "real", "REAL": "real", "I": "imaginary",
          "IMAGINARY": "imaginary", "M": "magnitude", "MAGNITUDE": "magnitude",
          "FIELD_MAP": "fieldmap", "B0": "fieldmap", "B0MAP": "fieldmap",
          "FIELDMAPHZ": "fieldmap"}


def _sidecar_kind(sidecar: dict, suffix: str) -> tuple[int | None, str | None]:
    """Echo number and image type of a dcm2niix output, from its sidecar and name."""
    echo = sidecar.get("EchoNumber")
    kind = None
    for value in sidecar.get("ImageType") or []:
        if str(value).upper() in _TYPES and str(value).upper() not in ("M", "MAGNITUDE"):
            kind = _TYPES[str(value).upper()]
    if kind is None and "_ph" in f"_{suffix}":
        kind = "phase"
    if kind is None and "_real" in f"_{suffix}":
        kind = "real"
    if kind is None and "_imaginary" in f"_{suffix}":
        kind = "imaginary"
    return (int(echo) if echo is not None else None), kind


def medsr_images(folder: Path, uid: str) -> list[tuple[str, dict]]:
    """The images medsr offers for a series (one, unless it splits echoes or image types):
    (series key to pass as ``series_uid``, its labels)."""
    try:
        from medsr.io.dicom import series_images
    except ImportError:  # medsr before issue 32: one image per series
        return [(uid, {})]
    return [(key, labels) for key, labels in series_images(folder, uid)]


def run_repo(repo: str, out_root: Path, dcm2niix: bool = True) -> list[dict]:
    """Compare medsr with dcm2niix on every series of one repository."""
    import medsr
    from medsr.io import read_frames, volume_frames

    work = out_root / repo
    if dcm2niix or not (work / "dcm2niix").is_dir():
        run_dcm2niix(repo, work / "dcm2niix")
    theirs = dcm2niix_outputs(work / "dcm2niix")
    rows = []
    for entry in scan_series(repo).values():
        uid = entry["uid"]
        row = {"repo": repo, "uid": uid, "copies": entry.get("copies", False),
               "folder": str(entry["folder"].relative_to(DATA)),
               "description": entry["description"], "manufacturer": entry["manufacturer"],
               "files": len(entry["files"]), "dcm2niix": [o["path"].name for o in theirs[uid]],
               "images": []}
        start = time.perf_counter()
        try:
            images = medsr_images(entry["folder"], uid)
        except Exception as exc:  # noqa: BLE001
            images, row["refused"] = [], _reason(exc)
        for key, labels in images:
            image = {"key": key, "labels": labels}
            try:
                frames = read_frames(entry["folder"], series_uid=key)
                array, affine, source = volume_frames(frames)
                image.update(volumes=int(array.shape[0]), shape=list(array.shape[1:]),
                             bvals=[f.get("DiffusionBValue") for f in source.extra.get(
                                 "frames", [])] or None)
                image["_data"] = (array, affine)
                image["_labels"] = source.extra.get("frames")
                image["_timing"] = source.extra.get("slice_timing")
            except Exception as exc:  # noqa: BLE001
                image["refused"] = _reason(exc)
            row["images"].append(image)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["comparisons"] = []
        for output in theirs[uid]:
            echo, kind = _sidecar_kind(output["sidecar"], output["suffix"])
            te = output["sidecar"].get("EchoTime")
            candidates = [im for im in row["images"] if "_data" in im]
            pick = _match(candidates, echo, kind, te * 1000 if te else None,
                          _polarity(output["sidecar"]))
            comp = {"dcm2niix": output["path"].name, "echo": echo, "type": kind}
            if _derived_output(output["suffix"]):
                comp["derived"] = True  # dcm2niix's trace/ADC file: medsr leaves it out
            elif pick is not None:
                comp["medsr"] = pick["key"]
                comp.update(compare(*pick["_data"], output["path"]))
                comp.update(compare_tables(pick, output))
                if output["bval"] is not None and pick.get("bvals"):
                    comp["bval_match"] = bool(len(output["bval"]) == len(pick["bvals"]) and all(
                        abs(float(x or 0) - y) <= max(1.0, 0.01 * y)
                        for x, y in zip(pick["bvals"], output["bval"])))
            row["comparisons"].append(comp)
        for image in row["images"]:
            for key in ("_data", "_labels", "_timing"):
                image.pop(key, None)
        row["verdict"] = verdict(row)
        rows.append(row)
        print(f"{repo} {row['folder']} {uid[-12:]}: {row['verdict']}", flush=True)
        del images
    medsr.__name__  # noqa: B018 - keep the import (the version is recorded by main)
    return rows


def _derived_output(suffix: str) -> bool:
    return any(part in ("ADC", "TRACEW", "trace") for part in suffix.split("_"))


_SHORT = {"magnitude": "mag", "phase": "ph", "real": "real", "imaginary": "imag",
          "fieldmap": "fmap"}


def _polarity(sidecar: dict) -> str:
    """GE ``epi_pepolar``: dcm2niix writes the reversed-polarity volumes of a series that
    holds both as series number + 1000."""
    try:
        return "rev" if int(sidecar.get("SeriesNumber") or 0) >= 1000 else "fwd"
    except (TypeError, ValueError):
        return "fwd"


def _match(candidates: list[dict], echo: int | None, kind: str | None,
           te: float | None = None, polarity: str = "fwd") -> dict | None:
    if len(candidates) == 1:
        return candidates[0]
    best, score = None, -1
    for im in candidates:
        labels = im["labels"]
        s = 0
        if echo is not None and labels.get("echo") == echo:
            s += 2
        if te is not None and labels.get("te") is not None and abs(labels["te"] - te) < 0.05:
            s += 4
        if (labels.get("type") or "mag") == _SHORT.get(kind or "magnitude"):
            s += 3
        if labels.get("polarity") == polarity:
            s += 5
        if s > score:
            best, score = im, s
    return best


def _same(c: dict) -> bool:
    return ("corner_mm" in c and c["corner_mm"] <= 0.1 and (c["r_min"] or 0) >= 0.99
            and c["medsr_volumes"] == c["dcm2niix_volumes"])


def verdict(row: dict) -> str:
    """One word for the row: match, refused, differs, medsr-only, dcm2niix-skips."""
    if not row["dcm2niix"]:
        return "dcm2niix-skips" if any("volumes" in im for im in row["images"]) \
            else "both-skip"
    if "refused" in row or not row["images"] or all("refused" in im for im in row["images"]):
        return "refused"
    comps = [c for c in row["comparisons"] if not c.get("derived")]
    if row.get("copies"):  # one of dcm2niix's outputs (classic or enhanced copy) is this one
        return "match" if any(_same(c) for c in comps) else "differs"
    if comps and all("corner_mm" in c and c["corner_mm"] <= 0.1 and (c["r_min"] or 0) >= 0.99
           and c["medsr_volumes"] == c["dcm2niix_volumes"] for c in comps) and \
            len({c.get("medsr") for c in comps}) == len(comps) and len(comps) == sum(
            "volumes" in im for im in row["images"]):
        return "match"
    return "differs"


# ------------------------------------------------------------------------------- report
def table(rows: list[dict]) -> str:
    """The per-repository markdown table: series, matches, refusals, differences."""
    lines = [("| repository | series | same as dcm2niix | refused (reason) | differs | "
              "dcm2niix writes none |"), "| --- | --- | --- | --- | --- | --- |"]
    by_repo: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_repo[row["repo"]].append(row)
    totals = Counter()
    for repo, items in by_repo.items():
        count = Counter(r["verdict"] for r in items)
        totals.update(count)
        totals["series"] += len(items)
        reasons = Counter(_short_reason(r) for r in items if r["verdict"] == "refused")
        refused = "; ".join(f"{n}: {why}" for why, n in reasons.most_common()) or ""
        differs = "; ".join(f"{r['folder'].split('/', 2)[-1]}" for r in items
                            if r["verdict"] == "differs")
        lines.append(f"| {repo} | {len(items)} | {count['match']} | "
                     f"{count['refused']}{' (' + refused + ')' if refused else ''} | "
                     f"{count['differs']}{' (' + differs + ')' if differs else ''} | "
                     f"{count['dcm2niix-skips'] + count['both-skip']} |")
    lines.append(f"| **all** | {totals['series']} | {totals['match']} | {totals['refused']} | "
                 f"{totals['differs']} | {totals['dcm2niix-skips'] + totals['both-skip']} |")
    return "\n".join(lines)


def merged(paths: list[Path]) -> list[dict]:
    """Rows of several results files; a later file's repositories replace an earlier one's."""
    by_repo: dict[str, list[dict]] = {}
    for path in paths:
        rows = json.loads(path.read_text())["rows"]
        for repo in {r["repo"] for r in rows}:
            by_repo[repo] = [r for r in rows if r["repo"] == repo]
    return [row for repo in REPOS for row in by_repo.get(repo, [])]


def before_after(before: list[dict], after: list[dict]) -> str:
    """Series matched / refused / differing per repository, before and after."""
    lines = [("| repository | series | same before | same after | refused before | "
              "refused after | differs before | differs after |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    totals = Counter()
    for repo in REPOS:
        b = Counter(r["verdict"] for r in before if r["repo"] == repo)
        a = Counter(r["verdict"] for r in after if r["repo"] == repo)
        n = sum(1 for r in after if r["repo"] == repo)
        if not n:
            continue
        cells = [b["match"], a["match"], b["refused"], a["refused"], b["differs"],
                 a["differs"]]
        totals.update(dict(zip(("mb", "ma", "rb", "ra", "db", "da"), cells)))
        totals["n"] += n
        lines.append(f"| {repo} | {n} | " + " | ".join(map(str, cells)) + " |")
    lines.append(f"| **all** | {totals['n']} | " + " | ".join(
        str(totals[k]) for k in ("mb", "ma", "rb", "ra", "db", "da")) + " |")
    return "\n".join(lines)


def _short_reason(row: dict) -> str:
    reason = row.get("refused") or next((im["refused"] for im in row["images"]
                                         if "refused" in im), "")
    for key in ("duplicate slice position", "no valid ImagePositionPatient", "no pixel data",
                "colour image", "different ImageOrientationPatient", "uneven slice spacing",
                "different grids", "different Rows/Columns", "different PixelSpacing",
                "holds several images", "compressed"):
        if key in reason:
            return key
    return reason[:60]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("extract")
    run = sub.add_parser("run")
    run.add_argument("repos", nargs="*")
    run.add_argument("--out", type=Path, default=Path("/work/data/dcm_qa_out"))
    run.add_argument("--results", type=Path, default=DATA / "results.json")
    run.add_argument("--reuse-dcm2niix", action="store_true",
                     help="keep dcm2niix's outputs of an earlier run")
    show = sub.add_parser("table", help="the table of results files (a later file's "
                          "repositories replace an earlier one's)")
    show.add_argument("results", type=Path, nargs="+")
    show.add_argument("--before", type=Path, nargs="*", default=[],
                      help="results of medsr before the change: a before/after count table")
    args = parser.parse_args(argv)
    if args.command == "extract":
        report = [extract(repo) for repo in REPOS]
        (DATA / "extract.json").write_text(json.dumps(report, indent=1))
        for item in report:
            print(item["repo"], item.get("files"), "files;",
                  len(item.get("absent", [])), "absent (4 MiB or more):",
                  ", ".join(a["path"] for a in item.get("absent", [])))
        return 0
    if args.command == "table":
        rows = merged(args.results)
        print(table(rows))
        if args.before:
            print()
            print(before_after(merged(args.before), rows))
        return 0
    logging.basicConfig(level=logging.WARNING)
    import medsr

    version = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True,
                             check=False).stdout
    rows = []
    start = time.perf_counter()
    for repo in args.repos or REPOS:
        if (DATA / repo).is_dir():
            rows += run_repo(repo, args.out, dcm2niix=not args.reuse_dcm2niix)
    result = {"medsr": getattr(medsr, "__version__", "?"), "medsr_path": medsr.__file__,
              "dcm2niix": next((line.strip() for line in version.splitlines()
                                if "version" in line.lower()), ""),
              "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    args.results.write_text(json.dumps(result, indent=1, default=str))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
