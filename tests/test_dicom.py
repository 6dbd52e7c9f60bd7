"""DICOM reading and writing: slice sorting, geometry, rescale, round trips and errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medsr.errors import MedsrError
from medsr.geometry import flip_lps_ras
from medsr.io.dicom import read_dicom, write_dicom
from medsr.io.meta import SourceInfo, make_volume, volume_parts

SHAPE = (7, 6, 5)  # X (Columns), Y (Rows), Z (slices)


# ----------------------------------------------------------------------------------- helpers
def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rodrigues rotation about ``axis``."""
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def lps_affine(columns: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return affine


GEOMETRIES = {
    # anisotropic 0.7 x 0.9 x 5 mm, axial
    "anisotropic": lps_affine(np.diag([0.7, 0.9, 5.0]), (-40.5, -30.25, 12.0)),
    # rotation about a non-axis vector
    "oblique": lps_affine(rotation((1, 2, 3), 25) @ np.diag([0.7, 0.9, 5.0]), (10.0, -5.5, 3.25)),
    # column direction points to -P and slices run against cross(row, col): stored descending
    "flipped": lps_affine(np.column_stack([(0.8, 0, 0), (0, -0.8, 0), (0, 0, 3.0)]),
                          (1.0, 2.0, -3.0)),
    # gantry tilt: the slice axis is sheared towards the column direction
    "tilted": lps_affine(np.column_stack([(0.7, 0, 0), (0, 0.9, 0), (0, 1.2, 5.0)]),
                         (-20.0, 15.0, 40.0)),
}


def canonical(values: np.ndarray, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a reader returns: slices ascending along cross(row, col); RAS affine."""
    lps = lps.copy()
    if lps[:3, 2] @ np.cross(lps[:3, 0], lps[:3, 1]) < 0:
        lps[:3, 3] = (lps @ [0, 0, values.shape[2] - 1, 1])[:3]
        lps[:3, 2] *= -1
        values = values[..., ::-1]
    return values, flip_lps_ras(lps)


def _file_dataset(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    return ds


def _image_attrs(ds: Dataset, stored: np.ndarray) -> None:
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = int(stored.dtype.kind == "i")


def write_series(folder: Path, stored: np.ndarray, lps: np.ndarray, *, modality: str = "MR",
                 slope: float = 1.0, intercept: float = 0.0, series_uid: str | None = None,
                 description: str = "t1", seed: int = 0) -> list[Path]:
    """Write a classic series with shuffled file names and InstanceNumbers.

    ``stored[i, j, k]`` is the stored value at column i, row j of slice k.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, numbers = rng.permutation(stored.shape[2]), rng.permutation(stored.shape[2])
    series_uid = series_uid or generate_uid()
    r = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    c = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    files = []
    for k in range(stored.shape[2]):
        ds = _file_dataset(CTImageStorage if modality == "CT" else MRImageStorage)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "Test^Patient", "PID123"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series_uid, description, 3
        ds.Modality, ds.ImageType = modality, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(numbers[k]) + 1
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*r, *c)]
        ds.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))]
        ds.SliceThickness = float(abs(lps[:3, 2] @ np.cross(r, c)))
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.SmallestImagePixelValue = 0
        _image_attrs(ds, stored)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        file = folder / f"slice_{names[k]:03d}.dcm"
        ds.save_as(file, enforce_file_format=True)
        files.append(file)
    return files


def stored_values(seed: int = 1, high: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, SHAPE).astype(np.uint16)


def sitk_read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Values (X, Y, Z) and RAS affine as SimpleITK/GDCM sees a series folder."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), flip_lps_ras(lps)


# ----------------------------------------------------------------------------------- reading
def test_read_sorts_by_position_not_names_or_instance_numbers(tmp_path):
    stored = stored_values()
    lps = GEOMETRIES["oblique"]
    write_series(tmp_path / "s", stored, lps, seed=3)
    (tmp_path / "s" / "README").write_text("not dicom")
    dicomdir = _file_dataset(MediaStorageDirectoryStorage)
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)

    volume = read_dicom(tmp_path / "s")
    array, affine, source = volume_parts(volume)
    assert volume.shape == (1, *SHAPE)
    np.testing.assert_array_equal(array, stored.astype(np.float32))
    np.testing.assert_allclose(affine, flip_lps_ras(lps), atol=1e-6)
    assert source.format == "dicom" and source.modality == "MR" and source.dtype == "int16"
    assert "PixelData" not in source.header and source.header.PatientID == "PID123"

    ref_values, ref_affine = sitk_read(tmp_path / "s")
    np.testing.assert_array_equal(array, ref_values)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-4)


def test_ct_rescale_gives_hounsfield_int16(tmp_path):
    stored = stored_values()
    write_series(tmp_path, stored, GEOMETRIES["anisotropic"], modality="CT", intercept=-1024)
    array, _, source = volume_parts(read_dicom(tmp_path))
    np.testing.assert_array_equal(array, stored.astype(np.float32) - 1024)
    assert array.min() < 0 and source.dtype == "int16" and source.modality == "CT"
    assert source.extra["slice_thickness"] == pytest.approx(5.0)


def test_non_integer_slope_reads_as_float(tmp_path):
    stored = stored_values()
    write_series(tmp_path, stored, GEOMETRIES["anisotropic"], slope=0.5, intercept=-10)
    array, _, source = volume_parts(read_dicom(tmp_path))
    np.testing.assert_allclose(array, stored * 0.5 - 10)
    assert source.dtype == "float32"


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip(tmp_path, name):
    lps = GEOMETRIES[name]
    stored = stored_values()
    source_files = write_series(tmp_path / "in", stored, lps, modality="CT", intercept=-1024)
    volume = read_dicom(tmp_path / "in")
    array, affine, _ = volume_parts(volume)
    truth_values, truth_affine = canonical(stored.astype(np.float32) - 1024, lps)
    np.testing.assert_array_equal(array, truth_values)
    np.testing.assert_allclose(affine, truth_affine, atol=1e-6)

    (tmp_path / "out").mkdir()
    files = write_dicom(volume, tmp_path / "out")
    assert [f.name for f in files] == [f"IM{k:06d}.dcm" for k in range(1, SHAPE[2] + 1)]
    array2, affine2, source2 = volume_parts(read_dicom(tmp_path / "out"))
    np.testing.assert_allclose(affine2, affine, atol=1e-4)
    np.testing.assert_array_equal(array2, array)
    assert source2.dtype == "int16"

    ref_values, ref_affine = sitk_read(tmp_path / "out")
    np.testing.assert_array_equal(ref_values, array)
    cols = [0, 1, 3] if name == "tilted" else [0, 1, 2, 3]  # ITK cannot store a sheared grid
    np.testing.assert_allclose(ref_affine[:, cols], affine[:, cols], atol=1e-4)

    old = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files]
    new = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len({ds.SeriesInstanceUID for ds in new}) == 1
    assert new[0].SeriesInstanceUID != old[0].SeriesInstanceUID
    sops = {ds.SOPInstanceUID for ds in new}
    assert len(sops) == len(new) and not sops & {ds.SOPInstanceUID for ds in old}
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in new)
    assert [ds.InstanceNumber for ds in new] == list(range(1, len(new) + 1))
    first = new[0]
    assert list(first.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert first.StudyInstanceUID == old[0].StudyInstanceUID
    assert first.FrameOfReferenceUID == old[0].FrameOfReferenceUID
    assert first.PatientID == "PID123" and first.SOPClassUID == CTImageStorage
    assert first.SeriesDescription == "t1 medsr SR" and first.SeriesNumber == 1003
    assert "medsr" in first.DerivationDescription and "SmallestImagePixelValue" not in first


def test_round_trip_float_slope(tmp_path):
    stored = stored_values()
    write_series(tmp_path / "in", stored, GEOMETRIES["oblique"], slope=0.5, intercept=-10)
    volume = read_dicom(tmp_path / "in")
    (tmp_path / "out").mkdir()
    write_dicom(volume, tmp_path / "out")
    array2, affine2, _ = volume_parts(read_dicom(tmp_path / "out"))
    array, affine, _ = volume_parts(volume)
    slope = float(pydicom.dcmread(tmp_path / "out" / "IM000001.dcm").RescaleSlope)
    np.testing.assert_allclose(affine2, affine, atol=1e-4)
    assert np.abs(array2 - array).max() <= slope / 2 + 1e-4


# ----------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("modality, sop_class", [("MR", MRImageStorage),
                                                 (None, SecondaryCaptureImageStorage)])
def test_write_non_dicom_source(tmp_path, modality, sop_class):
    values = np.random.default_rng(2).integers(-500, 900, SHAPE).astype(np.float32)
    affine = flip_lps_ras(GEOMETRIES["oblique"])
    source = SourceInfo(format="nifti", path="brain.nii.gz", dtype="int16", modality=modality)
    write_dicom(make_volume(values, affine, source), tmp_path)
    array2, affine2, _ = volume_parts(read_dicom(tmp_path))
    np.testing.assert_allclose(affine2, affine, atol=1e-4)
    np.testing.assert_array_equal(array2, values)
    ds = pydicom.dcmread(tmp_path / "IM000001.dcm")
    assert ds.SOPClassUID == sop_class and ds.Modality == (modality or "OT")
    assert ds.PatientName == "Anonymous" and ds.SeriesDescription == "medsr SR"
    assert ds.SeriesNumber == 1000 and ds.PixelRepresentation == 1


def test_write_left_handed_grid_comes_back_reversed(tmp_path):
    values = np.random.default_rng(4).integers(0, 900, SHAPE).astype(np.float32)
    affine = np.diag([-0.9, 1.1, 2.5, 1.0])  # LAS, as many NIfTI files
    write_dicom(make_volume(values, affine, SourceInfo("nifti", "x.nii", "uint16")), tmp_path)
    array2, affine2, _ = volume_parts(read_dicom(tmp_path))
    truth_values, truth_affine = canonical(values, flip_lps_ras(affine))
    np.testing.assert_allclose(affine2, truth_affine, atol=1e-4)
    np.testing.assert_array_equal(array2, truth_values)


def test_float_negative_range_within_half_slope(tmp_path):
    values = np.random.default_rng(5).uniform(-3.7, 12.2, SHAPE).astype(np.float32)
    affine = flip_lps_ras(GEOMETRIES["anisotropic"])
    write_dicom(make_volume(values, affine, SourceInfo("nifti", "x.nii", "float32")), tmp_path)
    ds = pydicom.dcmread(tmp_path / "IM000001.dcm")
    slope = float(ds.RescaleSlope)
    assert slope == pytest.approx((values.max() - values.min()) / 65535, rel=1e-6)
    array2, _, source2 = volume_parts(read_dicom(tmp_path))
    assert np.abs(array2 - values).max() <= slope / 2 * (1 + 1e-6)
    assert source2.dtype == "float32"


@pytest.mark.parametrize("low, high, dtype, bits, signed", [
    (0, 4095, "uint16", 12, 0), (-1024, 3071, "int16", 13, 1), (0, 1, "uint8", 1, 0),
    (-70000, -10000, "int32", 16, 0),  # stored with an integer intercept, still exact
])
def test_bits_stored_fitted(tmp_path, low, high, dtype, bits, signed):
    values = np.random.default_rng(6).integers(low, high + 1, SHAPE).astype(np.float64)
    values.flat[:2] = low, high
    affine = flip_lps_ras(GEOMETRIES["anisotropic"])
    write_dicom(make_volume(values, affine, SourceInfo("nifti", "x.nii", dtype)), tmp_path)
    ds = pydicom.dcmread(tmp_path / "IM000001.dcm")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, bits, bits - 1)
    assert ds.PixelRepresentation == signed
    np.testing.assert_array_equal(volume_parts(read_dicom(tmp_path))[0], values.astype(np.float32))
    np.testing.assert_array_equal(sitk_read(tmp_path)[0], values)


def test_dtype_argument_rounds_and_clips(tmp_path):
    values = np.linspace(-3.4, 300.6, np.prod(SHAPE)).reshape(SHAPE).astype(np.float32)
    affine = flip_lps_ras(GEOMETRIES["anisotropic"])
    volume = make_volume(values, affine, SourceInfo("nifti", "x.nii", "float32"))
    write_dicom(volume, tmp_path, dtype="uint8")
    array2 = volume_parts(read_dicom(tmp_path))[0]
    np.testing.assert_array_equal(array2, np.clip(np.rint(values), 0, 255))


def test_write_needs_empty_folder(tmp_path):
    (tmp_path / "x").write_text("")
    volume = make_volume(np.zeros(SHAPE), np.eye(4), SourceInfo("nifti", "x.nii", "int16"))
    with pytest.raises(MedsrError, match="empty folder"):
        write_dicom(volume, tmp_path)


# ----------------------------------------------------------------------------------- multi-frame
def enhanced_dataset() -> Dataset:
    """An empty Enhanced MR instance with patient, study, series and frame-of-reference UIDs."""
    ds = _file_dataset(EnhancedMRImageStorage)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Test", "PID9", "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    return ds


def write_enhanced(file: Path, stored: np.ndarray, lps: np.ndarray, *, intercept: float = 0.0,
                   seed: int = 7) -> None:
    """An Enhanced MR file whose frames are stored in shuffled spatial order."""
    order = np.random.default_rng(seed).permutation(stored.shape[2])
    r = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    c = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    ds = enhanced_dataset()
    ds.NumberOfFrames = stored.shape[2]
    _image_attrs(ds, stored)
    measures, orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))]
    measures.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
    orientation.ImageOrientationPatient = [float(v) for v in (*r, *c)]
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, intercept, "US"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for k in order:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        group.PlanePositionSequence = [position]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = np.ascontiguousarray(stored[:, :, order].transpose(2, 1, 0)).tobytes()
    ds.save_as(file, enforce_file_format=True)


def test_enhanced_multiframe(tmp_path):
    stored = stored_values()
    lps = GEOMETRIES["oblique"]
    write_enhanced(tmp_path / "mf.dcm", stored, lps, intercept=-100)
    volume = read_dicom(tmp_path / "mf.dcm")
    array, affine, source = volume_parts(volume)
    np.testing.assert_array_equal(array, stored.astype(np.float32) - 100)
    np.testing.assert_allclose(affine, flip_lps_ras(lps), atol=1e-6)
    assert "PerFrameFunctionalGroupsSequence" not in source.header
    assert "PixelData" not in source.header and source.modality == "MR"
    np.testing.assert_array_equal(volume_parts(read_dicom(tmp_path))[0], array)  # as a folder too

    (tmp_path / "out").mkdir()
    files = write_dicom(volume, tmp_path / "out")
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == MRImageStorage and "NumberOfFrames" not in ds
    assert "SharedFunctionalGroupsSequence" not in ds and ds.PatientID == "PID9"
    array2, affine2, _ = volume_parts(read_dicom(tmp_path / "out"))
    np.testing.assert_array_equal(array2, array)
    np.testing.assert_allclose(affine2, affine, atol=1e-4)


def test_legacy_multiframe(tmp_path):
    stored = stored_values()
    ds = _file_dataset(SecondaryCaptureImageStorage)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.NumberOfFrames = generate_uid(), "OT", SHAPE[2]
    ds.ImagePositionPatient = [1.0, 2.0, 3.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.9, 0.7]
    _image_attrs(ds, stored)
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    with pytest.raises(MedsrError, match="without per-frame positions"):
        read_dicom(tmp_path / "a.dcm")
    ds.SpacingBetweenSlices = 2.5
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    array, affine, source = volume_parts(read_dicom(tmp_path / "a.dcm"))
    np.testing.assert_array_equal(array, stored)
    truth = lps_affine(np.diag([0.7, 0.9, 2.5]), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(affine, flip_lps_ras(truth), atol=1e-6)
    assert source.modality is None and source.extra["modality_raw"] == "OT"


# ----------------------------------------------------------------------------------- errors
def _one_line_error(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(MedsrError, match=match) as info:
        read_dicom(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_several_series(tmp_path):
    a, b = generate_uid(), generate_uid()
    write_series(tmp_path / "a", stored_values(), GEOMETRIES["anisotropic"], series_uid=a,
                 description="t1")
    small = stored_values(high=100)[:, :, :3]
    write_series(tmp_path / "b", small, GEOMETRIES["oblique"], series_uid=b, description="flair")
    message = _one_line_error(tmp_path, "--series")
    assert f"{a} (t1, 5 slices)" in message and f"{b} (flair, 3 slices)" in message
    np.testing.assert_array_equal(volume_parts(read_dicom(tmp_path, series_uid=b))[0], small)
    message = _one_line_error(tmp_path, "not found", series_uid="1.2.3")
    assert a in message and b in message


def test_file_without_pixel_data(tmp_path, caplog):
    """A non-image object carrying the series' UID (Philips keeps one in DWI folders) is
    skipped with one line, as dcm2niix skips it; alone, it is refused."""
    stored = stored_values()
    files = write_series(tmp_path / "s", stored, GEOMETRIES["anisotropic"])
    ds = pydicom.dcmread(files[2])
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "s" / "private.dcm", enforce_file_format=True)
    with caplog.at_level(logging.WARNING, logger="medsr.io.dicom"):
        array, _, _ = volume_parts(read_dicom(tmp_path / "s"))
    np.testing.assert_array_equal(array, stored)
    lines = [r.getMessage() for r in caplog.records if "without pixel data" in r.getMessage()]
    assert len(lines) == 1 and "private.dcm" in lines[0]
    assert "private.dcm" in _one_line_error(tmp_path / "s" / "private.dcm", "has no pixel data")


def test_missing_slice(tmp_path):
    stored = stored_values()
    files = write_series(tmp_path, stored, GEOMETRIES["anisotropic"])
    files[3].unlink()  # the fourth slice in space: gap between sorted slices 3 and 4
    _one_line_error(tmp_path, r"uneven slice spacing: gap of 10\.0 mm between slices 3 and 4, "
                              r"median 5\.0 mm \(missing slices\?\)")


def test_duplicate_and_mixed_orientation(tmp_path):
    files = write_series(tmp_path / "d", stored_values(), GEOMETRIES["anisotropic"])
    ds = pydicom.dcmread(files[1])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "d" / "copy.dcm", enforce_file_format=True)
    _one_line_error(tmp_path / "d", "duplicate slice position")
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.save_as(tmp_path / "d" / "copy.dcm", enforce_file_format=True)
    _one_line_error(tmp_path / "d", "different ImageOrientationPatient")


@pytest.mark.parametrize("keep", [0.97, 0.6, 0.15])  # in the pixels, dataset, file meta
def test_truncated_file(tmp_path, keep):
    files = write_series(tmp_path, stored_values(), GEOMETRIES["anisotropic"])
    data = files[1].read_bytes()
    files[1].write_bytes(data[: int(len(data) * keep)])
    assert files[1].name in _one_line_error(tmp_path, ".")
    assert files[1].name in _one_line_error(files[1], ".")


def test_single_slice_file_is_a_volume_of_one_slice(tmp_path):
    """One file of a series reads as that slice, placed where the series places it."""
    import medsr

    values = stored_values()
    files = write_series(tmp_path, values, GEOMETRIES["oblique"])
    series, one = medsr.load_volume(tmp_path), medsr.load_volume(files[0])
    assert tuple(one.shape) == (1, *values.shape[:2], 1)
    k = next(z for z in range(values.shape[2])
             if np.array_equal(series[0, ..., z].numpy(), one[0, ..., 0].numpy()))
    a, b = series.affine.numpy(), one.affine.numpy()
    assert np.allclose(b[:3, :2], a[:3, :2], atol=1e-4)  # rows and columns
    assert np.allclose(b[:3, 3], (a @ [0, 0, k, 1])[:3], atol=1e-3)  # where the slice lies
    normal = a[:3, 2] / np.linalg.norm(a[:3, 2])
    assert np.allclose(b[:3, 2] / np.linalg.norm(b[:3, 2]), normal, atol=1e-4)
