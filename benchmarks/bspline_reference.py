"""medsr's B-spline upscaling against SimpleITK's own B-spline resampling onto the truth grid.

A thin-slice volume is slab-averaged (each thick slice the mean of f thin ones) along an axis,
written to disk, upscaled by medsr through the same path as the CLI, and compared with the thin
truth; SimpleITK resamples the same thick volume onto the truth grid as the reference.
The two PSNRs should agree and the output grid should be the truth grid.

Usage::

    python benchmarks/bspline_reference.py THIN.nii.gz [--axis 2] [--factors 3,5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import medsr
from medsr.io import SourceInfo, make_volume, volume_parts
from medsr.io.itk import image_from_array


def slab_average(thin: np.ndarray, affine: np.ndarray, axis: int, f: int):
    """Thick volume and affine; thick voxel centres sit at the centres of their slabs."""
    n = thin.shape[axis] // f
    moved = np.moveaxis(thin, axis, -1)[..., : n * f]
    thick = np.moveaxis(moved.reshape(*moved.shape[:-1], n, f).mean(-1), -1, axis)
    t = np.eye(4)
    t[axis, axis] = f
    t[axis, 3] = (f - 1) / 2
    cropped = np.moveaxis(moved, -1, axis)
    return thick, affine @ t, cropped


def psnr(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    return float(10 * np.log10(data_range**2 / np.mean((x.astype(np.float64) - y) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thin", type=Path)
    parser.add_argument("--axis", type=int, default=2)
    parser.add_argument("--factors", default="3,5")
    args = parser.parse_args()
    thin, affine, source = volume_parts(medsr.load_volume(args.thin))
    print(f"{args.thin.name}: {thin.shape}, axis {args.axis}")
    print(f"{'factor':>6} {'medsr PSNR':>10} {'SimpleITK PSNR':>14} {'grid max err mm':>15}")
    for f in (int(v) for v in args.factors.split(",")):
        thick, thick_affine, truth = slab_average(thin, affine, args.axis, f)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "thick.nii.gz"
            vol = make_volume(thick, thick_affine, SourceInfo("nifti", "", "float32"))
            medsr.save_volume(vol, path)
            scale = [1, 1, 1]
            scale[args.axis] = f
            out = medsr.upscale(path, scale, method="bspline")
        ours, out_affine, _ = volume_parts(out)
        ref = sitk.Resample(image_from_array(thick, thick_affine),
                            image_from_array(truth, affine), sitk.Transform(),
                            sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        theirs = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)
        rng = float(truth.max() - truth.min())
        grid_err = float(np.abs(out_affine - affine).max())
        print(f"{f:>6} {psnr(ours, truth, rng):>10.3f} {psnr(theirs, truth, rng):>14.3f} "
              f"{grid_err:>15.2e}")


if __name__ == "__main__":
    main()
