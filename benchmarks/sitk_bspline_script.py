"""The reference a user could write by hand: read NIfTI -> SimpleITK B-spline -> write NIfTI.

Upscales the last array axis by an integer factor with the same geometry convention as medsr
(the physical extent kept: voxels subdivide the source voxels). Run as its own process by
``benchmarks/speed_table.py``; nothing of medsr is imported.

Usage::

    python benchmarks/sitk_bspline_script.py IN.nii.gz OUT.nii.gz --factor 3
"""

from __future__ import annotations

import argparse

import SimpleITK as sitk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--factor", type=int, default=3)
    args = parser.parse_args()
    image = sitk.ReadImage(args.src)
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    size[2] *= args.factor
    spacing[2] /= args.factor
    # the first output voxel centre moves by (d/f - d)/2 along the slice direction
    origin = image.TransformContinuousIndexToPhysicalPoint((0, 0, (1 / args.factor - 1) / 2))
    out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkBSpline, origin, spacing,
                        image.GetDirection(), 0, image.GetPixelID())
    sitk.WriteImage(out, args.dst, useCompression=True)


if __name__ == "__main__":
    main()
