"""Data consistency: learned outputs reproduce the measured slices, without block edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.consistency import SliceProfile, degrade, project, redegradation_psnr
from medsr.resample import upsample_axis
from medsr.transforms.degrade import slice_profile


@pytest.mark.parametrize("factor", [2, 3, 5, 8])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_box_projection_makes_each_block_average_its_slice(factor, axis):
    rng = np.random.default_rng(factor + 10 * axis)
    shape = [7, 6, 5]
    lr = rng.normal(100.0, 30.0, size=shape).astype(np.float32)
    out_shape = list(shape)
    out_shape[axis] *= factor
    out = rng.normal(100.0, 30.0, size=out_shape).astype(np.float32)
    before = out.copy()
    fixed = project(out, lr, axis, factor, SliceProfile("box", 1.0))
    np.testing.assert_array_equal(out, before)  # the input is not modified
    blocks = np.moveaxis(fixed, axis, 0).reshape(shape[axis], factor, -1).mean(axis=1)
    np.testing.assert_allclose(blocks, np.moveaxis(lr, axis, 0).reshape(shape[axis], -1),
                               atol=2e-3)
    assert redegradation_psnr(fixed, lr, axis, factor, SliceProfile()) > 70


def test_matches_the_degradation_transform():
    """The consistency operator is the one training degrades with (slice_profile)."""
    rng = np.random.default_rng(0)
    hr = rng.normal(size=(4, 5, 30)).astype(np.float32)
    for prof in (SliceProfile("box", 1.0), SliceProfile("box", 1.4), SliceProfile("gaussian", 1.0)):
        expected = slice_profile(torch.from_numpy(hr)[None], 2, 5, prof.width * 5, prof.kind)[0]
        np.testing.assert_allclose(degrade(hr, 2, 5, prof)[:, :, 1:-1],
                                   expected.numpy()[:, :, 1:-1], atol=1e-5)


@pytest.mark.parametrize("prof", [SliceProfile("gaussian", 1.0), SliceProfile("box", 1.5)])
def test_wide_profiles_are_reproduced(prof):
    rng = np.random.default_rng(1)
    lr = rng.normal(size=(6, 6, 12)).astype(np.float32)
    out = upsample_axis(lr, 2, 4, "bspline") + rng.normal(0, 0.3, size=(6, 6, 48))
    assert redegradation_psnr(out.astype(np.float32), lr, 2, 4, prof) < 40
    assert redegradation_psnr(project(out, lr, 2, 4, prof), lr, 2, 4, prof) > 60


def test_no_block_edges():
    """A smooth disagreement is corrected smoothly: no steps at block boundaries, unlike a
    per-block constant shift."""
    z = np.arange(20 * 5) / 5.0
    truth = np.sin(z / 3.0)[None, None, :].astype(np.float32)
    lr = truth.reshape(1, 1, 20, 5).mean(-1)
    estimate = truth + 0.2 * np.cos(z / 4.0)[None, None, :].astype(np.float32)  # smooth error
    fixed = project(estimate, lr, 2, 5, SliceProfile())[0, 0]
    jumps = np.abs(np.diff(fixed))
    boundary = jumps[4::5]  # differences across block boundaries
    inside = np.delete(jumps, np.s_[4::5])
    assert boundary.max() < 1.5 * inside.max()
    assert np.abs(fixed - truth[0, 0]).max() < np.abs(estimate - truth).max()
    blockwise = estimate[0, 0] + np.repeat(lr[0, 0] - estimate[0, 0].reshape(20, 5).mean(-1), 5)
    assert np.abs(np.diff(blockwise))[4::5].max() > boundary.max()
