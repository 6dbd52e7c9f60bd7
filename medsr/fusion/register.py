"""Rigid registration of a stack to the reference (SimpleITK).

A stack's header says where it is; between acquisitions the subject moves by a few degrees and
millimetres. :func:`register` finds the rigid transform (``Euler3DTransform``: three rotations
about the stack's centre, three translations) that best aligns the stack with a reference
volume, starting from the headers (the identity in world space, never from the images' centres
or moments), over three resolutions (shrink 4, 2, 1; smoothing 2, 1, 0 voxels), with the
correlation metric (one contrast: intensities are related linearly) on images block-averaged
to about 2 mm first (:func:`block_mean`: the finest level's work is the part that costs, and it
changes the transform by hundredths of a degree), a regular-step gradient
descent with scales from physical shifts, and a fixed random sample of the stack's voxels (the same
transform on every run).

Transforms are returned as 4×4 RAS matrices mapping the stack's world (where its header puts
it) to the reference's (:mod:`medsr.fusion.grid`); SimpleITK's own, which maps the fixed
image's LPS points to the moving image's, is the same map in LPS.

A stack *does not register* when the optimiser fails, when its correlation with the reference
after registration stays under :data:`MIN_CORRELATION`, or when the transform found moves it
more than :data:`MAX_DEGREES` or :data:`MAX_MM` from its header (beyond what a session's motion
does, so more likely a wrong optimum); :func:`register` then says why in ``failure``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medsr.fusion.grid import centre_of
from medsr.geometry import LPS_TO_RAS

#: a registered stack correlates at least this well with the reference
MIN_CORRELATION = 0.5
#: and moves at most this far from its header: degrees (largest rotation), millimetres
MAX_DEGREES, MAX_MM = 20.0, 30.0
#: the images are block-averaged to about this spacing (mm) first; then three resolutions
WORKING_MM = 2.0
SHRINK, SMOOTHING = (4, 2, 1), (2.0, 1.0, 0.0)
#: voxels the metric samples at each resolution (at most; all of them on small images)
SAMPLES = 20_000


@dataclass
class Registration:
    """One stack's rigid transform and how well it fits.

    Attributes:
        transform: 4×4 RAS, the stack's world -> the reference's world.
        correlation: normalised cross-correlation with the reference after registration
            (before it: ``correlation_before``), over the voxels both cover.
        failure: why the stack does not register (``None`` when it does).
    """

    transform: np.ndarray
    correlation: float
    correlation_before: float
    iterations: int = 0
    failure: str | None = None

    @property
    def degrees(self) -> float:
        """The rotation angle of the transform."""
        r = self.transform[:3, :3]
        return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))

    def shift_mm(self, centre: np.ndarray) -> float:
        """How far the transform moves ``centre`` (a world point, mm)."""
        c = np.asarray(centre, dtype=np.float64)
        return float(np.linalg.norm(self.transform[:3, :3] @ c + self.transform[:3, 3] - c))

    def as_dict(self, centre: np.ndarray) -> dict:
        """JSON-ready: the matrix, rotation (degrees), shift of ``centre`` (mm), correlation."""
        return {"matrix_ras": np.round(self.transform, 6).tolist(),
                "rotation_deg": round(self.degrees, 3),
                "shift_mm": round(self.shift_mm(centre), 3),
                "correlation": round(self.correlation, 4),
                "correlation_before": round(self.correlation_before, 4),
                "iterations": self.iterations}


def _to_lps(m: np.ndarray) -> np.ndarray:
    return LPS_TO_RAS @ np.asarray(m, dtype=np.float64) @ LPS_TO_RAS


def block_mean(array: np.ndarray, affine: np.ndarray, mm: float = WORKING_MM
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` averaged over blocks of ``k`` voxels per axis, ``k`` bringing the
    finest spacing near ``mm`` (:mod:`medsr.geometry`'s convention: block ``j`` covers voxels
    ``k*j .. k*j+k-1``); unchanged when ``k`` is 1."""
    from medsr.geometry import resampled_affine, spacing

    k = [max(1, min(round(mm / float(s)), n)) for s, n in zip(spacing(affine),
                                                                  array.shape)]
    if k == [1, 1, 1]:
        return np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64)
    n = [a // b for a, b in zip(array.shape, k)]
    cut = np.asarray(array, dtype=np.float32)[:n[0] * k[0], :n[1] * k[1], :n[2] * k[2]]
    out = cut.reshape(n[0], k[0], n[1], k[1], n[2], k[2]).mean(axis=(1, 3, 5))
    return out, resampled_affine(affine, k)


def correlation(fixed, moving, transform: np.ndarray) -> float:
    """Normalised cross-correlation of the fixed image with the moving image carried onto it
    by ``transform`` (RAS), over the fixed voxels inside the moving image."""
    import SimpleITK as sitk

    tx = sitk.AffineTransform(3)
    lps = _to_lps(transform)
    tx.SetMatrix(lps[:3, :3].ravel().tolist())
    tx.SetTranslation(lps[:3, 3].tolist())
    warped = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, math.nan, sitk.sitkFloat32)
    a = sitk.GetArrayViewFromImage(fixed).astype(np.float64).ravel()
    b = sitk.GetArrayViewFromImage(warped).astype(np.float64).ravel()
    keep = np.isfinite(b)
    if keep.sum() < 100:
        return 0.0
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


def register(fixed: tuple[np.ndarray, np.ndarray], moving: tuple[np.ndarray, np.ndarray],
             initial: np.ndarray | None = None, *, seed: int = 0,
             iterations: int = 200) -> Registration:
    """Rigid transform that aligns ``fixed`` (a stack, or a volume made from it) with
    ``moving`` (the reference): ``(array, RAS affine)`` each.

    Args:
        fixed: the stack's image on its own grid.
        moving: the reference image.
        initial: the starting transform (RAS, stack world -> reference world); default the
            identity (the headers).
        seed: of the metric's random sample.
        iterations: the most optimiser steps per resolution.

    Returns:
        The :class:`Registration`; ``failure`` says why when the stack does not register.
    """
    import SimpleITK as sitk

    from medsr.io.itk import image_from_array

    fixed_image = image_from_array(*block_mean(*fixed))
    moving_image = image_from_array(*block_mean(*moving))
    start = np.eye(4) if initial is None else np.asarray(initial, dtype=np.float64)
    before = correlation(fixed_image, moving_image, start)
    centre = centre_of(fixed[0].shape, fixed[1])
    euler = sitk.Euler3DTransform()
    euler.SetCenter(tuple(float(v) for v in LPS_TO_RAS[:3, :3] @ centre))
    lps = _to_lps(start)
    euler.SetMatrix(lps[:3, :3].ravel().tolist(), 1e-4)
    # translation about the centre: T(p) = R (p - c) + c + t
    c = np.asarray(euler.GetCenter())
    euler.SetTranslation((lps[:3, :3] @ c + lps[:3, 3] - c).tolist())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = fixed_image.GetNumberOfPixels()
    method.SetMetricSamplingPercentagePerLevel(
        [min(1.0, SAMPLES * s ** 3 / voxels) for s in SHRINK], seed + 1)  # 0: the clock
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-8, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING))
    method.SetInitialTransform(euler, inPlace=True)
    steps = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: steps.__setitem__(0, steps[0] + 1))
    try:
        method.Execute(fixed_image, moving_image)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "failed"
        return Registration(start, before, before, steps[0],
                            f"the registration failed ({reason})")
    m = np.eye(4)
    m[:3, :3] = np.asarray(euler.GetMatrix()).reshape(3, 3)
    m[:3, 3] = np.asarray(euler.GetTranslation()) + np.asarray(euler.GetCenter()) \
        - m[:3, :3] @ np.asarray(euler.GetCenter())
    result = Registration(_to_lps(m), correlation(fixed_image, moving_image, _to_lps(m)),
                          before, steps[0])
    if result.correlation < MIN_CORRELATION:
        result.failure = (f"it does not match the reference (correlation "
                          f"{result.correlation:.2f} after registration, under "
                          f"{MIN_CORRELATION})")
    elif result.degrees > MAX_DEGREES or result.shift_mm(centre) > MAX_MM:
        result.failure = (f"registration moved it {result.degrees:.1f}° and "
                          f"{result.shift_mm(centre):.1f} mm from its header, beyond the "
                          f"{MAX_DEGREES:g}° and {MAX_MM:g} mm a session's motion explains")
    return result
