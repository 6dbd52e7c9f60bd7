"""Real DICOM slice positions: rounding wander read as one volume, missing slices refused, and
the header's slice thickness (a gap) used as the slice profile."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import rotation

import medsr
from medsr.errors import MedsrError
from medsr.geometry import flip_lps_ras
from medsr.io import SourceInfo, make_volume
from medsr.io.dicom import read_dicom, write_dicom
from medsr.io.meta import volume_parts

DATA = Path(__file__).parent / "data"
#: gaps of a GE Signa oblique PD series (5 mm slices, 2 mm gaps): positions rounded, so the
#: spacing wanders between 6.958 and 7.071 mm around its mean
GE_GAPS = [7.071, 6.958, 6.972, 6.986, 6.972, 6.958, 7.014, 6.972, 6.986, 6.972]


def _real_slices() -> np.ndarray:
    """Eleven real MR slices (Colin27 crop, every 5th slice), uint8 values."""
    thin = medsr.load_volume(DATA / "colin27_t1_crop.nii.gz")[0].numpy()
    return thin[:, :, ::5][:, :, : len(GE_GAPS) + 1]


def _ge_like_series(folder: Path, gaps=GE_GAPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real slices written by medsr's DICOM writer on an oblique 7 mm grid, then given the
    wandering positions of ``gaps`` (rounded to 0.001 mm as a scanner stores them) and GE's
    SliceThickness 5 mm. Returns the values, the positions (LPS) and the slice normal."""
    values = _real_slices()
    directions = rotation((1, 2, 3), 20.0)
    lps = np.eye(4)
    lps[:3, :3] = directions @ np.diag([0.9375, 0.9375, 7.0])
    lps[:3, 3] = (-31.25, 12.5, 40.0)
    source = SourceInfo("nifti", "", "uint8", modality="MR")
    folder.mkdir()
    files = write_dicom(make_volume(values, flip_lps_ras(lps), source), folder)
    normal = directions[:, 2]
    along = np.concatenate([[0.0], np.cumsum(gaps)])
    positions = np.round(lps[:3, 3] + along[:, None] * normal, 3)
    for file, position in zip(files, positions):
        ds = pydicom.dcmread(file)
        ds.ImagePositionPatient = [f"{v:.3f}" for v in position]
        ds.SliceThickness, ds.SpacingBetweenSlices = "5", "7"
        ds.save_as(file, enforce_file_format=True)
    return values, positions, normal


def test_rounded_positions_read_as_one_volume_on_the_mean_spacing(tmp_path, caplog):
    values, positions, normal = _ge_like_series(tmp_path / "ge")
    with caplog.at_level(logging.WARNING, logger="medsr"):
        volume = read_dicom(tmp_path / "ge")
    array, affine, source = volume_parts(volume)
    np.testing.assert_array_equal(array, values)
    lps = flip_lps_ras(affine)
    # the least-squares line through the positions: mean spacing along the same normal
    index = np.arange(len(positions), dtype=float)
    slope = np.polyfit(index, positions, 1)[0]
    np.testing.assert_allclose(lps[:3, 2], slope, atol=1e-9)
    assert float(lps[:3, 2] @ normal) == pytest.approx(np.mean(GE_GAPS), abs=0.01)
    np.testing.assert_allclose(np.cross(lps[:3, 0], lps[:3, 1]) / 0.9375**2, normal, atol=1e-6)
    # every slice lies within the reported wander (and within 0.1 mm) of its grid position
    grid = (lps @ np.vstack([np.zeros((2, len(index))), index, np.ones(len(index))]))[:3].T
    off = np.linalg.norm(grid - positions, axis=1)
    wander = source.extra["slice_wander_mm"]
    assert off.max() == pytest.approx(wander, abs=1e-3) and 0 < wander < 0.1
    assert source.extra["slice_thickness"] == 5.0
    assert any("wander by up to" in r.getMessage() for r in caplog.records)


def test_exact_positions_report_no_wander(tmp_path):
    values = _real_slices()
    source = SourceInfo("nifti", "", "uint8", modality="MR")
    affine = np.diag([0.9, 0.9, 7.0, 1.0])
    (tmp_path / "d").mkdir()
    write_dicom(make_volume(values, affine, source), tmp_path / "d")
    array, read_affine, read_source = volume_parts(read_dicom(tmp_path / "d"))
    np.testing.assert_array_equal(array, values)
    np.testing.assert_allclose(read_affine, affine, atol=1e-6)
    assert "slice_wander_mm" not in read_source.extra


def test_a_missing_slice_is_still_refused(tmp_path):
    _ge_like_series(tmp_path / "ge")
    files = sorted((tmp_path / "ge").iterdir())
    files[5].unlink()  # sixth slice in space: the gap between sorted slices 5 and 6 doubles
    with pytest.raises(MedsrError, match=r"uneven slice spacing: gap of 13\.93 mm between "
                                         r"slices 5 and 6, median 6\.985 mm \(missing slices\?\)"):
        read_dicom(tmp_path / "ge")


def test_wander_beyond_rounding_is_refused(tmp_path):
    gaps = list(GE_GAPS)
    gaps[4], gaps[5] = 8.0, 6.0  # one slice 1 mm off: 14 % of the spacing, no rounding
    _ge_like_series(tmp_path / "ge", gaps)
    with pytest.raises(MedsrError, match=r"stray up to .* from an even grid") as info:
        read_dicom(tmp_path / "ge")
    assert "\n" not in str(info.value)


def test_header_slice_thickness_is_the_learned_profile(tmp_path):
    _ge_like_series(tmp_path / "ge")
    out = medsr.upscale(tmp_path / "ge", (1, 1, 3), method="default")
    spacing = float(np.linalg.norm(read_dicom(tmp_path / "ge").affine[:3, 2]))
    assert out.meta["medsr_slice_profile"] == {"kind": "box",
                                               "width": round(5.0 / spacing, 4)}
    given = medsr.upscale(tmp_path / "ge", (1, 1, 3), method="default", slice_thickness=7.0)
    assert given.meta["medsr_slice_profile"]["width"] == round(7.0 / spacing, 4)
