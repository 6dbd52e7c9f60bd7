"""The one-axis resampling path against SimpleITK, its slabs and ``out=``, and the memory check."""

from __future__ import annotations

import numpy as np
import pytest

from medsr.errors import MedsrError
from medsr.memory import available_memory_bytes, check_memory, estimate_peak_bytes, format_bytes
from medsr.resample import (
    resample_axis,
    resample_index_space,
    resample_sitk,
    resampled_axis,
    tap_weights,
    upsample_axis,
)

TOL = 1e-4  # of the intensity range


def phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """Nested ellipsoids with sharp edges (air, tissue, bone-like values)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in shape],
                       indexing="ij")
    r2 = sum((g / a) ** 2 for g, a in zip(grid, (0.9, 0.8, 0.95)))
    inner = sum((g / a) ** 2 for g, a in zip(grid, (0.3, 0.5, 0.4)))
    out = np.full(shape, -1000.0, dtype=np.float32)
    out[r2 <= 1] = 40.0
    out[inner <= 1] = 1200.0
    return out


def subdivision(axis: int, factor: int) -> tuple[list[float], list[float]]:
    ratio = [1.0, 1.0, 1.0]
    offset = [0.0, 0.0, 0.0]
    ratio[axis] = 1.0 / factor
    offset[axis] = (1.0 / factor - 1.0) / 2.0
    return ratio, offset


def assert_close_to_sitk(data: np.ndarray, axis: int, n_out: int, ratio: list[float],
                         offset: list[float], method: str) -> np.ndarray:
    shape = list(data.shape)
    shape[axis] = n_out
    ref = resample_sitk(data, shape, ratio, offset, method, None)
    got = resample_index_space(data, shape, ratio, offset, method)
    assert got.dtype == np.float32 and got.shape == tuple(shape)
    span = float(data.max() - data.min()) or 1.0
    err = float(np.abs(got - ref).max()) / span
    assert err <= TOL, (axis, data.shape, n_out, method, err)
    return got


@pytest.mark.parametrize("method", ["bspline", "linear"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_fast_path_matches_simpleitk_for_factors_2_to_8(method, axis):
    rng = np.random.default_rng(axis)
    for factor in range(2, 9):
        for n in (3, 6, 7):  # tiny, even, odd
            shape = [5, 4, 6]
            shape[axis] = n
            ratio, offset = subdivision(axis, factor)
            for data in (rng.normal(0, 300, shape).astype(np.float32), phantom(tuple(shape))):
                assert_close_to_sitk(data, axis, n * factor, ratio, offset, method)


@pytest.mark.parametrize("method", ["bspline", "linear"])
def test_fast_path_matches_simpleitk_on_a_phantom_with_long_axes(method):
    data = phantom((24, 20, 17))
    for axis in range(3):
        ratio, offset = subdivision(axis, 5)
        assert_close_to_sitk(data, axis, data.shape[axis] * 5, ratio, offset, method)


@pytest.mark.parametrize("method", ["bspline", "linear"])
def test_general_ratio_and_points_outside_the_source(method):
    """Non-subdivision grids: samples up to half a voxel out are interpolated, further out 0."""
    rng = np.random.default_rng(5)
    data = rng.normal(size=(4, 3, 12)).astype(np.float32)
    for r, o, n_out in [(0.37, -1.2, 40), (0.21, -0.49, 50), (0.5, 0.3, 30), (1.7, -0.6, 9),
                        (0.3, 10.2, 20)]:
        got = assert_close_to_sitk(data, 2, n_out, [1, 1, r], [0, 0, o], method)
        x = r * np.arange(n_out) + o
        outside = (x < -0.5) | (x >= 12 - 0.5)
        assert np.all(got[:, :, outside] == 0)


def test_two_sample_axis_uses_the_true_mirror():
    """n=2: ITK's single reflection reads outside its buffer for points at or past the last
    sample (garbage there); before them we equal ITK, and everywhere the mirror spline."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(2)
    data = rng.normal(size=(3, 4, 2)).astype(np.float32)
    for factor in (2, 3, 5, 8):
        ratio, offset = subdivision(2, factor)
        got = resample_axis(data, 2, 2 * factor, ratio[2], offset[2])
        x = ratio[2] * np.arange(2 * factor) + offset[2]
        coords = np.stack(np.meshgrid(np.arange(3), np.arange(4), x, indexing="ij"))
        mirror = ndimage.map_coordinates(data.astype(np.float64), coords, order=3, mode="mirror")
        np.testing.assert_allclose(got, mirror, atol=1e-5)
        ref = resample_sitk(data, (3, 4, 2 * factor), ratio, offset, "bspline", None)
        valid = x < 1.0 - 1e-6  # from x = 1 on, ITK's fourth tap reads outside its buffer
        np.testing.assert_allclose(got[:, :, valid], ref[:, :, valid], atol=1e-5)


def test_single_sample_axis_repeats_the_sample():
    data = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    for method in ("bspline", "linear"):
        got = upsample_axis(data, 2, 4, method)
        np.testing.assert_allclose(got, np.repeat(data, 4, axis=2), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slab_wise_equals_whole_volume_exactly(axis):
    data = phantom((9, 11, 7)) + np.random.default_rng(0).normal(0, 5, (9, 11, 7)).astype(
        np.float32)
    for method in ("bspline", "linear"):
        whole = resample_axis(data, axis, data.shape[axis] * 3, 1 / 3, -1 / 3, method,
                              slab_bytes=2**40)
        for slab in (1, 700, 5000):  # one index per slab; uneven slabs; a few
            for threads in (1, 3):
                parts = resample_axis(data, axis, data.shape[axis] * 3, 1 / 3, -1 / 3, method,
                                      slab_bytes=slab, threads=threads)
                np.testing.assert_array_equal(parts, whole)


def test_preallocated_output_array_and_memmap(tmp_path):
    data = phantom((6, 5, 8)).astype(np.int16)  # an integer source, converted slab by slab
    expected = resample_index_space(data.astype(np.float32), (6, 5, 24), *subdivision(2, 3))
    out = np.full((6, 5, 24), np.nan, dtype=np.float32)
    got = resample_index_space(data, (6, 5, 24), *subdivision(2, 3), out=out)
    assert got is out
    np.testing.assert_array_equal(out, expected)
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32,
                                   shape=(6, 5, 24))
    upsample_axis(data, 2, 3, out=mm, method="bspline")
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), expected)
    # the SimpleITK path (two axes) writes into out too
    ratio, offset = [0.5, 1.0, 1 / 3], [-0.25, 0.0, -1 / 3]
    out2 = np.zeros((12, 5, 24), dtype=np.float32)
    got2 = resample_index_space(data, (12, 5, 24), ratio, offset, out=out2)
    assert got2 is out2
    np.testing.assert_array_equal(out2, resample_sitk(data, (12, 5, 24), ratio, offset,
                                                       "bspline", None))
    with pytest.raises(ValueError, match="float32"):
        resample_index_space(data, (6, 5, 24), *subdivision(2, 3),
                             out=np.zeros((6, 5, 24), dtype=np.float64))


def test_non_contiguous_input_and_routing():
    data = np.ascontiguousarray(phantom((8, 7, 6)).transpose(2, 0, 1))  # (6, 8, 7)
    view = data.transpose(1, 2, 0)  # (8, 7, 6), not C-contiguous
    got = upsample_axis(view, 2, 4)
    np.testing.assert_array_equal(got, upsample_axis(np.ascontiguousarray(view), 2, 4))
    assert resampled_axis((8, 7, 6), (8, 7, 24), [1, 1, 0.25], [0, 0, -0.375]) == 2
    assert resampled_axis((8, 7, 6), (8, 7, 6), [1, 1, 1], [0, 0, 0]) == 0
    assert resampled_axis((8, 7, 6), (16, 7, 24), [0.5, 1, 0.25], [-0.25, 0, -0.375]) is None
    assert resampled_axis((8, 7, 6), (8, 7, 24), [1, 1, 0.25], [0.1, 0, -0.375]) is None


def test_tap_weights_sum_to_one_inside():
    for method in ("bspline", "linear"):
        _, weights = tap_weights(10, 50, 0.2, -0.4, method)
        np.testing.assert_allclose(np.sum(weights, axis=0), 1.0, atol=1e-12)


def test_unknown_method_is_refused():
    with pytest.raises(MedsrError, match="unknown method"):
        resample_index_space(np.zeros((2, 2, 2)), (2, 2, 4), [1, 1, 0.5], [0, 0, -0.25],
                             "nearest")


def test_memory_check_refuses_an_oversize_request_in_one_line():
    estimate = estimate_peak_bytes((512, 512, 300), (512, 512, 1500), "bspline")
    with pytest.raises(MedsrError) as err:
        check_memory(estimate, 2 * 2**30, what="upscaling 512×512×300 ×5 with bspline")
    message = str(err.value)
    assert "\n" not in message
    assert format_bytes(estimate) in message and "2.00 GiB" in message
    check_memory(estimate_peak_bytes((64, 64, 10), (64, 64, 50), "bspline"), 2 * 2**30)
    check_memory(estimate_peak_bytes((64, 64, 10), (64, 64, 50), "linear"))  # machine limit
    assert available_memory_bytes() > 0


def test_memory_model_shape():
    small = estimate_peak_bytes((512, 512, 120), (512, 512, 600), "bspline")
    large = estimate_peak_bytes((512, 512, 300), (512, 512, 1500), "bspline")
    assert 2**30 < small < 2 * 2**30 and small < large
    general = estimate_peak_bytes((512, 512, 120), (1024, 512, 600), "bspline",
                                  out_dtype="float32")
    fast = estimate_peak_bytes((512, 512, 120), (1024, 512, 600), "bspline",
                               out_dtype="float32", one_axis=True)
    assert general > fast
    assert estimate_peak_bytes((64, 64, 10), (64, 64, 50), "default",
                               work_bytes=10**9) > estimate_peak_bytes(
        (64, 64, 10), (64, 64, 50), "default", work_bytes=10**7)
    with pytest.raises(ValueError, match="work_bytes"):
        estimate_peak_bytes((64, 64, 10), (64, 64, 50), "default")
    # outputs made on disk and streamed to a NIfTI file leave the input and the working set;
    # a writer of whole images (NRRD/MHA) holds the output and its stored copy
    on_disk = estimate_peak_bytes((512, 512, 300), (512, 512, 1500), "default",
                                  work_bytes=2**30, on_disk=True)
    in_memory = estimate_peak_bytes((512, 512, 300), (512, 512, 1500), "default",
                                    work_bytes=2**30)
    whole = estimate_peak_bytes((512, 512, 300), (512, 512, 1500), "default",
                                work_bytes=2**30, on_disk=True, streamed=False)
    assert in_memory - on_disk == 4 * 512 * 512 * 1500 and on_disk < 2 * 2**30
    assert whole > in_memory
