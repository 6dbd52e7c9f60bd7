"""Build the corpus of real scanner series (issue #31) from mirrors brought by ``fetch``.

A session step, never CI or tests: it reads bare git mirrors of public GitHub repositories
(``fetch github:OWNER/NAME`` puts them under ``/work/.mirror/OWNER+NAME/repo``), extracts the
folders named in :data:`SOURCES`, groups their DICOM files into series, reads each series with
``medsr.load_volume`` (dcm2niix where medsr refuses it), keeps one 3D volume per series (the
b0 / first volume of a 4D series; derived maps, phase images and localisers left out) and
writes it as NIfTI under ``OUT/<split>/<source>/``. The manifest (one row per volume:
repository and commit, series, vendor, field strength, sequence, matrix, voxel size, licence,
split) goes to ``--manifest`` (CSV, committed) and ``OUT/manifest.json``.

An MR axis the scanner zero-filled (almost no spectral energy beyond half its Nyquist) is
also written on its acquired grid (``native/``): training and benchmarks use that copy.
``--card MODEL`` names the corpus series a trained model learned from in its ``card.json``.

The split is by source: a held-out source shares no repository (and, as far as the headers and
READMEs tell, no subject) with the training sources. ``OUT/train_mr_mix/`` gets symlinks to at
most ``--train-cap`` MR volumes per training source (the samplers draw volumes uniformly, so one
source with 40 runs of one subject would otherwise dominate).

Usage::

    python scripts/build_corpus.py --mirrors /work/.mirror --out /work/data/corpus \\
        --manifest docs/corpus_manifest.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: repository licences (checked in each repository's LICENSE / README)
BSD2 = "BSD-2-Clause"


@dataclass
class Source:
    """A repository (and commit: None for the mirror's HEAD), the paths to extract, the split
    and licence, and why it is held out (if it is)."""

    repo: str
    paths: list[str]
    licence: str
    split: str = "train"
    commit: str | None = None
    why: str = ""
    skip: list[str] = field(default_factory=list)  # regexes on the series folder: left out
    derived_ok: bool = False  # a real scan rewritten (defaced, re-encoded): DERIVED in header
    nifti: str = ""  # sequence of the source's NIfTI files ("": NIfTI files are not read)
    vendor: str = ""  # the scanner's maker where the header names a converter instead


HELD_OUT_WHY = {
    "philips": "EPI (DWI b0) of vendor 1 (Philips), three sites",
    "polar": "EPI of vendor 2 (GE SIGNA UHP SE-EPI)",
    "datalad": "a 3T T1 (and BOLD, same studyforrest study: held out together), Philips",
    "ct": "a CT never trained on (Philips Brilliance chest); the TotalSegmentator CT is not "
          "held out because the shipped CT models learned from that repository's CTA",
}

SOURCES = [
    Source("neurolabusc/dcm_qa_stc", ["In"], BSD2),
    Source("neurolabusc/dcm_qa", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_mosaic", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_nih", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_sag", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_decubitus", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_canon_61", ["In"], BSD2),
    Source("neurolabusc/dcm_qa_toshiba", ["In"], BSD2),
    Source("niivue/niivue-demo-images", ["dicom"], BSD2),
    Source("CIBC-Internal/Seg3DData", ["example_dicom"], "MIT"),
    Source("Medical-Image-Analysis-Laboratory/mialsuperresolutiontoolkit", ["data/sub-01/anat"],
           "BSD-3-Clause", nifti="T2 (HASTE, fetal)", vendor="Siemens (BIDS sidecar)"),
    Source("wasserth/TotalSegmentator", ["tests/reference_files/example_ct_dicom"],
           "Apache-2.0"),
    Source("neurolabusc/dcm_qa_philips", ["In"], BSD2, "heldout", why=HELD_OUT_WHY["philips"]),
    Source("neurolabusc/dcm_qa_polar", ["In"], BSD2, "heldout", why=HELD_OUT_WHY["polar"]),
    Source("datalad/example-dicom-structural", ["dicoms"], "PDDL-1.0", "heldout",
           why=HELD_OUT_WHY["datalad"], derived_ok=True,  # defaced, then nifti2dicom
           vendor="Philips (README; header: nifti2dicom)"),
    Source("datalad/example-dicom-functional", ["dicoms"], "PDDL-1.0", "heldout",
           why=HELD_OUT_WHY["datalad"]),
    Source("InsightSoftwareConsortium/ITKElastix", ["examples/data/00"], "Apache-2.0",
           "heldout", commit="787db6d117d5c3de231935163b713f3e0a5c7433",
           why=HELD_OUT_WHY["ct"]),
]

#: header words that mark a series as not an acquired magnitude image of a person
DERIVED = {"DERIVED", "SECONDARY", "P", "PHASE", "ADC", "FA", "TRACEW", "MOSAIC_DERIVED"}
#: the smallest matrix kept along each axis (localisers and single slices left out)
MIN_SIZE = 8
#: an in-plane axis whose spectral energy beyond half its Nyquist frequency is below this
#: share was zero-filled (interpolated ×2 or more) by the scanner's reconstruction: the
#: acquired 1 mm T1s and EPIs of the corpus hold 0.5-4 %, the zero-filled ones 0.05-0.35 %
#: (MR only: a CT's spectrum is steep, 0.06-0.35 % on unfilled axes)
ZERO_FILL_SHARE = 0.004


def outer_energy(array, axis: int) -> float:
    """Share of the (mean-removed) spectral energy along ``axis`` beyond half its Nyquist."""
    import numpy as np

    power = np.abs(np.fft.fft(array - array.mean(), axis=axis)) ** 2
    power = np.moveaxis(power, axis, 0).reshape(array.shape[axis], -1).sum(1)
    outer = np.abs(np.fft.fftfreq(array.shape[axis])) > 0.25
    return float(power[outer].sum() / max(power.sum(), 1e-12))


def unfill(array, affine, axes: list[int]):
    """``array`` brought back to its acquired grid along zero-filled ``axes``: the central
    half of k-space, sampled at the centres of voxel pairs (medsr's ×2 grid convention,
    :func:`medsr.geometry.resampled_affine`). Returns (array, affine)."""
    import numpy as np

    from medsr.geometry import resampled_affine

    for axis in axes:
        n = array.shape[axis] // 2 * 2
        a = np.take(array, np.arange(n), axis=axis)
        k = np.fft.fftfreq(n) * n
        shape = [1] * a.ndim
        shape[axis] = n
        spec = np.fft.fft(a, axis=axis) * np.exp(1j * np.pi * k / n).reshape(shape)
        m = n // 2  # the central half of k-space, in FFT order (its Nyquist bin zero)
        index = np.concatenate([np.arange(m // 2), [0], np.arange(n - m // 2 + 1, n)])
        spec = np.take(spec, index, axis=axis)
        where = [slice(None)] * a.ndim
        where[axis] = m // 2
        spec[tuple(where)] = 0
        array = (np.fft.ifft(spec, axis=axis).real / 2).astype(np.float32)
        factors = [1.0] * 3
        factors[axis] = 2.0
        affine = resampled_affine(affine, factors)
    return array, affine


def git_dir(mirrors: Path, repo: str) -> Path:
    """The git directory of ``repo``'s mirror (``OWNER+NAME/repo`` or its ``.git``)."""
    base = mirrors / repo.replace("/", "+") / "repo"
    return base / ".git" if (base / ".git").is_dir() else base


def extract(gdir: Path, commit: str, paths: list[str], dest: Path) -> int:
    """Write the blobs under ``paths`` at ``commit`` into ``dest``; blobs a snapshot left
    out are skipped (``git archive`` would stop at the first). Returns the files written."""
    listing = subprocess.run(["git", "-C", str(gdir), "ls-tree", "-r", "-z", commit, "--", *paths],
                             check=True, capture_output=True).stdout.decode().split("\0")
    blobs = []
    for entry in filter(None, listing):
        meta, name = entry.split("\t", 1)
        _, kind, sha = meta.split()
        if kind == "blob" and not (dest / name).exists() and \
                not (dest / name.removesuffix(".gz")).exists():
            blobs.append((sha, name))
    if not blobs:
        return 0
    proc = subprocess.Popen(["git", "-C", str(gdir), "cat-file", "--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    written = 0
    for sha, name in blobs:
        proc.stdin.write(sha.encode() + b"\n")
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        if len(header) < 3:  # "<sha> missing": left out of the snapshot
            continue
        data = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)
        if name.endswith(".dcm.gz"):  # dcm_qa_canon_61 keeps its slices gzipped
            import gzip

            data, name = gzip.decompress(data), name[:-3]
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        written += 1
    proc.stdin.close()
    proc.wait()
    return written


def dicom_series(root: Path) -> dict[str, dict]:
    """DICOM files under ``root`` grouped by SeriesInstanceUID: files and first header."""
    import pydicom
    from tqdm import tqdm

    series: dict[str, dict] = {}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"headers {root.name}", leave=False, mininterval=5):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM (json, png, README)
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or str(path.parent)
        entry = series.setdefault(uid, {"files": [], "header": ds})
        entry["files"].append(path)
    return series


def _text(ds, *keys: str) -> str:
    return " ".join(str(ds.get(k, "")) for k in keys).strip()


def contrast(ds, modality: str, bvalues: list[float]) -> str:
    """A coarse sequence/contrast label from the header."""
    if modality == "CT":
        return "CT"
    desc = _text(ds, "SeriesDescription", "ProtocolName", "SequenceName").lower()
    seq = _text(ds, "ScanningSequence", "SequenceName", "PulseSequenceName").upper()
    epi = re.search(r"\bEP\b|EPFID|EPSE|EPI|EPSM", seq) is not None or re.search(
        r"ep2d|epi|fmri|bold|func|dti|dwi|diff|fm_cv|rest|dt_", desc) is not None
    if epi:
        if bvalues and max(bvalues) > 0 or re.search(r"dti|dwi|diff|dt_", desc):
            return "DWI b0"
        if re.search(r"fm_|se-epi|spin", desc) or seq.startswith("SE"):
            return "SE-EPI"
        return "EPI BOLD"
    if re.search(r"t1|mprage|mp_rage|fl2d|fl3d|tfe", desc):
        return "T1"
    if re.search(r"t2|haste|tse", desc):
        return "T2"
    if re.search(r"field|gre", desc):
        return "GRE (field map magnitude)"
    return "MR other"


def _read_medsr(folder: Path):
    """(3D frames, b-values, reader) through medsr, or raise."""
    from medsr.io import read_frames, select_volume

    frames = read_frames(folder)
    labels = frames.source.extra.get("frames") or []
    bvals = [float(lab.get("DiffusionBValue", 0) or 0) for lab in labels if isinstance(lab, dict)]
    index = int(min(range(len(bvals)), key=bvals.__getitem__)) if bvals else 0
    if frames.shape[0] > 1:
        frames = select_volume(frames, min(index, frames.shape[0] - 1))
    return frames, bvals, "medsr"


def _read_dcm2niix(folder: Path, scratch: Path):
    """(3D frames, b-values, reader) through dcm2niix (Debian), or raise."""
    from medsr.io import read_frames, select_volume

    out = scratch / "dcm2niix"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "v", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=600)
    niis = sorted(out.glob("*.nii"), key=lambda p: -p.stat().st_size)
    if not niis:
        raise RuntimeError("dcm2niix wrote no NIfTI")
    nii = niis[0]
    bfile = nii.with_suffix(".bval")
    bvals = [float(b) for b in bfile.read_text().split()] if bfile.exists() else []
    frames = read_frames(nii)
    index = int(min(range(len(bvals)), key=bvals.__getitem__)) if bvals else 0
    if frames.shape[0] > 1:
        frames = select_volume(frames, min(index, frames.shape[0] - 1))
    return frames, bvals, "dcm2niix"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "series"


def build_source(src: Source, mirrors: Path, out: Path, scratch: Path, seen: set[str]
                 ) -> list[dict]:
    """Extract, read and write the volumes of one source; rows for the manifest."""
    import numpy as np
    from tqdm import tqdm

    from medsr.geometry import spacing
    from medsr.io import make_frames, read_frames, save_volume, volume_frames

    gdir = git_dir(mirrors, src.repo)
    commit = src.commit or subprocess.run(["git", "-C", str(gdir), "rev-parse", "HEAD"],
                                          check=True, capture_output=True, text=True
                                          ).stdout.strip()
    raw = scratch / "raw" / src.repo.replace("/", "+")
    extract(gdir, commit, src.paths, raw)
    shutil.rmtree(out / src.split / src.repo.replace("/", "+"), ignore_errors=True)
    rows = []
    items: list[tuple[str, list[Path], object]] = []
    for nii in sorted(raw.rglob("*.nii.gz")) if src.nifti else []:
        items.append((str(nii.relative_to(raw)), [nii], None))
    for uid, entry in dicom_series(raw).items():
        folder = entry["files"][0].parent.relative_to(raw)
        items.append((uid, entry["files"], entry["header"]))
        entry["folder"] = str(folder)
    for key, files, ds in tqdm(items, desc=src.repo, mininterval=5):
        folder = str(files[0].parent.relative_to(raw)) if ds is not None else key
        row = {"repository": src.repo, "commit": commit, "series": folder, "licence": src.licence,
               "split": src.split, "series_uid": key if ds is not None else ""}
        if any(re.search(p, folder) for p in src.skip):
            continue
        if ds is not None:
            if key in seen:
                rows.append({**row, "status": "duplicate series (same SeriesInstanceUID)"})
                continue
            seen.add(key)
            kinds = {str(v).upper() for v in (ds.get("ImageType") or [])}
            if kinds & DERIVED and not src.derived_ok:
                rows.append({**row, "status": "left out: " + "/".join(sorted(kinds & DERIVED))})
                continue
            row["series"] = f"{folder} ({_text(ds, 'SeriesNumber')} "\
                            f"{_text(ds, 'SeriesDescription') or _text(ds, 'ProtocolName')})"
        try:
            if ds is None:
                frames, bvals, reader = read_frames(files[0]), [], "medsr"
                if frames.shape[0] > 1:
                    from medsr.io import select_volume
                    frames = select_volume(frames, 0)
            else:
                link = scratch / "series"
                shutil.rmtree(link, ignore_errors=True)
                link.mkdir(parents=True)
                for i, f in enumerate(files):
                    (link / f"{i:05d}.dcm").symlink_to(f.resolve())
                try:
                    frames, bvals, reader = _read_medsr(link)
                except Exception as err:  # medsr refuses: dcm2niix, as the issue allows
                    row["medsr_refusal"] = str(err).splitlines()[0][:160]
                    frames, bvals, reader = _read_dcm2niix(link, scratch)
        except Exception as err:
            rows.append({**row, "status": f"unreadable: {str(err).splitlines()[0][:160]}"})
            continue
        shape = tuple(int(s) for s in frames.shape[1:])
        if min(shape) < MIN_SIZE:
            rows.append({**row, "status": f"left out: matrix {shape}"})
            continue
        vox = spacing(np.asarray(frames.affine))
        modality = str(ds.get("Modality", "MR")) if ds is not None else "MR"
        name = f"{_slug(src.repo.split('/')[1])}__{_slug(folder)}"
        if ds is not None:
            name += f"_s{_text(ds, 'SeriesNumber') or len(rows)}"
        path = out / src.split / src.repo.replace("/", "+") / f"{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_volume(frames, path, force=True)
        array, affine, source = volume_frames(frames)
        shares = [outer_energy(array[0], a) for a in range(3)]
        filled = [a for a in range(3) if shares[a] < ZERO_FILL_SHARE and shape[a] >= 2 * MIN_SIZE
                  and modality != "CT"]  # CT is not zero-filled; its spectrum is steep
        row["outer_energy_pct"] = " ".join(f"{100 * v:.2f}" for v in shares)
        row["zero_filled_axes"] = " ".join(map(str, filled))
        if filled:  # the acquired grid: the truth a network should learn and be judged on
            native, native_affine = unfill(array[0], np.asarray(affine, dtype=np.float64), filled)
            npath = path.parent / "native" / path.name
            npath.parent.mkdir(exist_ok=True)
            save_volume(make_frames(native, native_affine, source), npath, force=True)
            row["native_file"] = str(npath.relative_to(out))
            row["native_matrix"] = "x".join(map(str, native.shape))
        hdr = ds if ds is not None else {}
        row.update({
            "status": "ok", "reader": reader, "file": str(path.relative_to(out)),
            "modality": modality,
            "vendor": src.vendor or _text(hdr, "Manufacturer"),
            "model": _text(hdr, "ManufacturerModelName"),
            "field_T": _text(hdr, "MagneticFieldStrength"),
            "sequence": contrast(hdr, modality, bvals) if ds is not None else src.nifti,
            "volumes_in_series": max(len(bvals), 1) if bvals else "",
            "b_value": min(bvals) if bvals else "",
            "matrix": "x".join(map(str, shape)),
            "voxel_mm": "x".join(f"{v:.3g}" for v in vox),
        })
        rows.append(row)
    return rows


COLUMNS = ["split", "repository", "commit", "series", "file", "status", "reader", "modality",
           "vendor", "model", "field_T", "sequence", "b_value", "matrix", "voxel_mm",
           "outer_energy_pct", "zero_filled_axes", "native_file", "native_matrix", "licence",
           "series_uid", "medsr_refusal"]


def train_mix(rows: list[dict], out: Path, cap: int) -> int:
    """Symlink at most ``cap`` MR training volumes per source into ``out/train_mr_mix``,
    spread over the sequences (EPI kinds first, then the rest)."""
    mix = out / "train_mr_mix"
    shutil.rmtree(mix, ignore_errors=True)
    mix.mkdir(parents=True)
    count = 0
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok" and r["split"] == "train" and r.get("modality") == "MR":
            by_source.setdefault(r["repository"], []).append(r)
    for group in by_source.values():
        kinds: dict[str, list[dict]] = {}
        for r in group:
            kinds.setdefault(r["sequence"], []).append(r)
        chosen = []
        while len(chosen) < cap and any(kinds.values()):
            for k in list(kinds):
                if kinds[k] and len(chosen) < cap:
                    chosen.append(kinds[k].pop(0))
        for r in chosen:
            r["in_mr_mix"] = "yes"
            target = out / (r.get("native_file") or r["file"])
            (mix / target.name).symlink_to(target)
            count += 1
    return count


def fill_card(model: Path, manifest: Path) -> int:
    """Name every corpus series a model learned from in its ``card.json`` (``ship_model.py``
    knows the packaged volumes only): repository@commit, series, scanner, sequence, licence.
    Returns how many entries it filled."""
    card_path = model / "card.json"
    card = json.loads(card_path.read_text())
    rows = {Path(r["file"]).name: r for r in csv.DictReader(open(manifest)) if r.get("file")}
    filled = 0
    for entry in card.get("training_data", []):
        r = rows.get(entry["file"])
        if r is not None:
            entry["source"] = (f"{r['repository']}@{r['commit'][:7]} {r['series']}; {r['vendor']} "
                               f"{r['model']}; {r['sequence']}, {r['matrix']} at {r['voxel_mm']} mm"
                               + (" (acquired grid: zero-filled axes undone)"
                                  if r.get("native_file") else "") + f"; {r['licence']}")
            filled += 1
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, default=Path("/work/data/corpus"))
    parser.add_argument("--manifest", type=Path, default=Path("docs/corpus_manifest.csv"))
    parser.add_argument("--only", nargs="*", help="repositories to (re)build; default: all")
    parser.add_argument("--train-cap", type=int, default=3)
    parser.add_argument("--card", type=Path, help="only fill this model's card.json from the "
                        "manifest (the corpus series it learned from), then stop")
    args = parser.parse_args()
    if args.card:
        print(f"{args.card}: {fill_card(args.card, args.manifest)} corpus series named")
        return
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "_scratch"
    cache = out / "manifest.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    seen: set[str] = {r["series_uid"] for rows in done.values() for r in rows if r["series_uid"]}
    for src in SOURCES:
        if args.only and src.repo not in args.only:
            continue
        if not git_dir(args.mirrors, src.repo).exists():
            print(f"{src.repo}: no mirror (fetch github:{src.repo} first); skipped")
            continue
        stale = {r["series_uid"] for r in done.get(src.repo, []) if r["series_uid"]}
        seen -= stale
        done[src.repo] = build_source(src, args.mirrors, out, scratch, seen)
        cache.write_text(json.dumps(done, indent=1))
        ok = [r for r in done[src.repo] if r.get("status") == "ok"]
        print(f"{src.repo}: {len(ok)} volumes of {len(done[src.repo])} series ({src.split})")
    rows = [r for src in SOURCES for r in done.get(src.repo, [])]
    print(f"MR training mix: {train_mix(rows, out, args.train_cap)} volumes in "
          f"{out / 'train_mr_mix'}")
    cache.write_text(json.dumps(done, indent=1))
    args.manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(args.manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS + ["in_mr_mix"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"manifest: {args.manifest} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
