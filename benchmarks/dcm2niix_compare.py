"""Compare medsr's DICOM reader with dcm2niix on the same series: extent and values.

For every volume, the 8 outer voxel corners (voxel edges, not centres) of medsr's grid are
matched to dcm2niix's in world space (RAS mm), and each medsr voxel is mapped to the dcm2niix
voxel at the same place to compare values. dcm2niix may store the axes permuted or flipped;
the comparison follows the affines, not the array layout.

Usage::

    python benchmarks/dcm2niix_compare.py [SERIES_FOLDER]

Without a folder, the two Siemens DWI mosaics of ``tests/data`` (nibabel test data, MIT) are
given known pixel values and compared. Needs ``dcm2niix`` on the PATH (Debian: ``apt-get
install dcm2niix``).
"""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

import medsr
from medsr.io import volume_frames

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates (8, 3) of the outer corners of a grid's voxels."""
    idx = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in shape[:3]])))
    return (affine[:3, :3] @ idx.T).T + affine[:3, 3]


def run_dcm2niix(series: Path, work: Path) -> Path:
    """Convert ``series`` with dcm2niix into ``work``; the one NIfTI it writes."""
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "out", "-o", str(work),
                    str(series)], check=True, capture_output=True, text=True)
    outputs = sorted(work.glob("out*.nii"))
    if len(outputs) != 1:
        raise RuntimeError(f"dcm2niix wrote {len(outputs)} NIfTI files: {outputs}")
    return outputs[0]


def compare(series: Path, work: Path) -> dict:
    """medsr vs dcm2niix on one series.

    Returns:
        ``shape`` (medsr's (T, X, Y, Z)), ``corner_mm`` (largest distance between matching
        corners), ``max_abs_diff`` (largest value difference at the same places),
        ``compared`` (voxels compared) and ``dcm2niix_shape``.
    """
    frames, affine, _ = volume_frames(medsr.load_volume(series))
    img = nib.load(str(run_dcm2niix(series, work)))
    other = np.asanyarray(img.dataobj).astype(np.float64)
    other = other.reshape(*other.shape[:3], -1)  # (X', Y', Z', T)
    if other.shape[3] != frames.shape[0]:
        raise RuntimeError(f"medsr found {frames.shape[0]} volumes, dcm2niix {other.shape[3]}")
    ours = corners(affine, frames.shape[1:])
    theirs = corners(img.affine, other.shape[:3])
    corner_mm = float(max(np.linalg.norm(theirs - c, axis=1).min() for c in ours))
    # medsr voxel index -> dcm2niix voxel index at the same place
    mapping = np.linalg.inv(img.affine) @ affine
    ijk = np.indices(frames.shape[1:]).reshape(3, -1)
    target = mapping[:3, :3] @ ijk + mapping[:3, 3:4]
    rounded = np.rint(target).astype(int)
    inside = np.all((rounded >= 0) & (rounded < np.array(other.shape[:3])[:, None]), axis=0)
    off_grid = float(np.abs(target - rounded)[:, inside].max()) if inside.any() else np.inf
    diffs = [np.abs(frames[t].reshape(-1)[inside]
                    - other[(*rounded[:, inside], t)]).max() for t in range(frames.shape[0])]
    return {"shape": tuple(int(s) for s in frames.shape), "corner_mm": corner_mm,
            "max_abs_diff": float(max(diffs)), "compared": int(inside.sum()) * len(diffs),
            "off_grid_voxels": off_grid, "dcm2niix_shape": tuple(int(s) for s in img.shape)}


def demo_series(folder: Path) -> Path:
    """The two nibabel Siemens DWI mosaics with known tile values (their own are all zero)."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    for base, name in ((1, "siemens_dwi_0.dcm.gz"), (7, "siemens_dwi_1000.dcm.gz")):
        with gzip.open(DATA / name) as f:
            ds = pydicom.dcmread(f)
        tiles, size = 7, ds.Rows // 7
        r, c = np.indices((ds.Rows, ds.Columns))
        k = (r // size) * tiles + c // size
        mosaic = np.where(k < 48, base + 1000 * k + 3 * (r % size) + c % size, 0)
        ds.PixelData = mosaic.astype(np.uint16).tobytes()
        ds.BitsStored, ds.HighBit = 16, 15  # the pattern needs more than the original 12 bits
        ds.save_as(folder / name.replace(".gz", ""))
    return folder


def main(argv: list[str]) -> int:
    if shutil.which("dcm2niix") is None:
        print("dcm2niix not found on the PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(argv[0]) if argv else demo_series(Path(tmp) / "series")
        result = compare(series, Path(tmp) / "dcm2niix")
    version = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True,
                             check=False).stdout
    result["dcm2niix"] = next((line.strip() for line in version.splitlines()
                               if "version" in line.lower()), "")
    print(json.dumps(result, indent=2))
    return 0 if result["corner_mm"] < 0.5 and result["max_abs_diff"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
