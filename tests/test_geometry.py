"""The subdivision convention, on any direction matrix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import AFFINES

from medsr.errors import MedsrError
from medsr.geometry import default_factors, parse_factors, resampled_affine, spacing, target_grid


def test_first_centre_moves_by_half_the_spacing_difference(affine):
    factors = (2, 1, 5)
    out = resampled_affine(affine, 1.0 / np.asarray(factors))
    d = spacing(affine)
    unit = affine[:3, :3] / d
    expected = affine[:3, 3] + unit @ ((d / factors - d) / 2)
    np.testing.assert_allclose(out[:3, 3], expected, atol=1e-9)
    np.testing.assert_allclose(spacing(out), d / factors, atol=1e-12)
    np.testing.assert_allclose(out[:3, :3] / spacing(out), unit, atol=1e-12)


def test_physical_extent_is_kept(affine):
    shape = np.array([10, 12, 7])
    out_shape, out_affine, _ = target_grid(shape, affine, scale=(3, 1, 4))

    def corners(aff, n):
        # outer voxel corners at index -0.5 and n-0.5
        lo = aff @ np.r_[-0.5, -0.5, -0.5, 1.0]
        hi = aff @ np.r_[np.asarray(n) - 0.5, 1.0]
        return lo[:3], hi[:3]

    for a, b in zip(corners(affine, shape), corners(out_affine, out_shape)):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_target_spacing_is_met_and_centred():
    affine = AFFINES["oblique"]
    shape = (20, 20, 9)
    out_shape, out_affine, _ = target_grid(shape, affine, target_spacing=(0.8, 0.8, 1.3))
    np.testing.assert_allclose(spacing(out_affine), (0.8, 0.8, 1.3), atol=1e-9)
    assert out_shape == (20, 20, round(9 * 4.0 / 1.3))
    centre_in = affine @ np.r_[(np.asarray(shape) - 1) / 2, 1]
    centre_out = out_affine @ np.r_[(np.asarray(out_shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_in, centre_out, atol=1e-9)


def test_default_factors_bring_the_thick_axis_down():
    assert default_factors((0.78, 0.78, 6.5)) == (1, 1, 8)
    assert default_factors((1.0, 1.0, 1.0)) == (1, 1, 1)
    assert default_factors((3.0, 1.0, 1.5)) == (3, 1, 2)


@pytest.mark.parametrize("bad", [(1, 1, 0), (1, 1, -2), (1, 2.5, 1), (1, 1)])
def test_bad_factors_are_refused(bad):
    with pytest.raises(MedsrError):
        parse_factors(bad)
