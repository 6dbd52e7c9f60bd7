"""DICOM as scanners write it: Siemens mosaics, series of several volumes, enhanced multi-frame
with several stacks, compressed pixel data, quiet library warnings."""

from __future__ import annotations

import gzip
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from test_dicom import GEOMETRIES, _file_dataset, _image_attrs, enhanced_dataset

import medsr
from medsr.errors import MedsrError
from medsr.geometry import flip_lps_ras
from medsr.io import volume_frames, volume_parts

DATA = Path(__file__).parent / "data"
SHAPE = (7, 6, 5)


# ----------------------------------------------------------------------------------- mosaics
def tile_pattern(rows: int, cols: int, slices: int, base: int = 1) -> np.ndarray:
    """(rows, cols, slices) values that differ per slice, row and column."""
    r, c, k = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(slices), indexing="ij")
    return (base + 1000 * k + 3 * r + c).astype(np.uint16)


def mosaic_file(src: str, dest: Path, base: int = 1) -> np.ndarray:
    """A real Siemens mosaic header (nibabel test data) with known pixel values.

    Returns the ``(rows, cols, slices)`` values placed in the tiles (row-major tiles).
    """
    with gzip.open(DATA / src) as f:
        ds = pydicom.dcmread(f)
    tiles = int(np.ceil(np.sqrt(48)))
    n_rows, n_cols = ds.Rows // tiles, ds.Columns // tiles
    values = tile_pattern(n_rows, n_cols, 48, base)
    mosaic = np.zeros((ds.Rows, ds.Columns), np.uint16)
    for k in range(48):
        i, j = divmod(k, tiles)
        mosaic[i * n_rows:(i + 1) * n_rows, j * n_cols:(j + 1) * n_cols] = values[:, :, k]
    ds.PixelData = mosaic.tobytes()
    ds.BitsStored, ds.HighBit = 16, 15  # the pattern needs more than the original 12 bits
    ds.save_as(dest)
    return values


def nibabel_affine(file: Path) -> np.ndarray:
    """nibabel's wrapper affine (LPS, row/column/slice) as medsr's RAS column/row/slice."""
    from nibabel.nicom.dicomwrappers import wrapper_from_data

    lps = np.asarray(wrapper_from_data(pydicom.dcmread(file)).affine)
    return flip_lps_ras(lps[:, [1, 0, 2, 3]])


def test_mosaic_unpacked_with_csa_geometry(tmp_path):
    file = tmp_path / "dwi.dcm"
    values = mosaic_file("siemens_dwi_1000.dcm.gz", file)
    vol = medsr.load_volume(file)
    array, affine, source = volume_parts(vol)
    assert array.shape == (128, 128, 48)  # columns, rows, slices
    np.testing.assert_array_equal(array, values.transpose(1, 0, 2))
    np.testing.assert_allclose(affine, nibabel_affine(file), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.796875, 1.796875, 3.0],
                               atol=1e-5)
    # the slice axis follows the CSA slice normal, not the ImagePositionPatient of the mosaic
    normal = np.asarray([0.0, 0.00523596, 0.99998629]) * [-1, -1, 1]  # LPS -> RAS
    np.testing.assert_allclose(affine[:3, 2] / 3.0, normal, atol=1e-5)
    assert source.dtype == "uint16"  # values above 32767 in unsigned 16-bit pixels
    assert "frames" not in source.extra


def test_mosaics_of_one_series_give_a_4d_volume(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    b0 = mosaic_file("siemens_dwi_0.dcm.gz", series / "zz_first.dcm", base=1)
    b1000 = mosaic_file("siemens_dwi_1000.dcm.gz", series / "aa_second.dcm", base=7)
    vol = medsr.load_volume(series)
    assert tuple(vol.shape) == (2, 128, 128, 48)
    frames, affine, source = volume_frames(vol)
    np.testing.assert_array_equal(frames[0], b0.transpose(1, 0, 2))
    np.testing.assert_array_equal(frames[1], b1000.transpose(1, 0, 2))
    np.testing.assert_allclose(affine, nibabel_affine(series / "aa_second.dcm"), atol=1e-4)
    labels = source.extra["frames"]
    assert [v["AcquisitionNumber"] for v in labels] == [1, 2]
    assert labels[0]["DiffusionBValue"] == 0 and labels[1]["DiffusionBValue"] == 1000  # CSA
    # the CSA header's DiffusionGradientDirection: patient (LPS) axes
    np.testing.assert_allclose(labels[1]["DiffusionGradientOrientation"],
                               [0.99997, 0.00505, -0.00505], atol=1e-4)
    one = medsr.load_volume(series, volume=1)
    np.testing.assert_array_equal(volume_parts(one)[0], b1000.transpose(1, 0, 2))
    with pytest.raises(MedsrError, match="out of range.*2 volumes"):
        medsr.load_volume(series, volume=2)


# ----------------------------------------------------------------------------------- classic 4D
def write_volumes(folder: Path, volumes: list[np.ndarray], tags: list[dict], lps: np.ndarray,
                  seed: int = 3, tr: float | None = None, shuffle: bool = True) -> None:
    """A classic series of several volumes at the same positions; names and (unless not
    ``shuffle``) InstanceNumbers are shuffled within each volume, and volumes are numbered in
    list (acquisition) order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uid = generate_uid()
    r = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    c = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    nz = volumes[0].shape[2]
    names = rng.permutation(len(volumes) * nz)
    for t, (stored, extra) in enumerate(zip(volumes, tags)):
        numbers = rng.permutation(nz) if shuffle else np.arange(nz)
        for k in range(nz):
            ds = _file_dataset(MRImageStorage)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientName, ds.PatientID, ds.Modality = "Test^Scanner", "PID7", "MR"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", uid
            ds.FrameOfReferenceUID = "1.2.3.5"
            ds.InstanceNumber = t * nz + int(numbers[k]) + 1
            ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
            ds.ImageOrientationPatient = [float(v) for v in (*r, *c)]
            ds.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])),
                               float(np.linalg.norm(lps[:3, 0]))]
            ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
            if tr is not None:
                ds.RepetitionTime = tr
            for key, value in extra.items():
                setattr(ds, key, value)
            _image_attrs(ds, stored)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            ds.save_as(folder / f"im_{names[t * nz + k]:04d}.dcm", enforce_file_format=True)


def stack(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 3000, SHAPE).astype(np.uint16) for _ in range(count)]


def test_fmri_time_points_become_4d(tmp_path):
    volumes = stack(4)
    tags = [{"TemporalPositionIdentifier": t + 1, "AcquisitionNumber": 1} for t in range(4)]
    write_volumes(tmp_path / "fmri", volumes, tags, GEOMETRIES["oblique"], tr=2000.0)
    vol = medsr.load_volume(tmp_path / "fmri")
    frames, affine, source = volume_frames(vol)
    assert frames.shape == (4, *SHAPE)
    for t in range(4):
        np.testing.assert_array_equal(frames[t], volumes[t])
    np.testing.assert_allclose(affine, flip_lps_ras(GEOMETRIES["oblique"]), atol=1e-5)
    assert [v["TemporalPositionIdentifier"] for v in source.extra["frames"]] == [1, 2, 3, 4]

    nii = nib.load(str(medsr.save_volume(vol, tmp_path / "fmri.nii.gz")))
    assert nii.shape == (*SHAPE, 4)
    np.testing.assert_array_equal(nii.get_fdata(), np.stack(volumes, axis=-1))
    assert float(nii.header["pixdim"][4]) == pytest.approx(2.0)
    assert nii.header.get_xyzt_units()[1] == "sec"


def test_4d_dicom_written_as_one_series_and_read_back(tmp_path):
    volumes = stack(3, seed=5)
    tags = [{"AcquisitionNumber": t + 1} for t in range(3)]
    write_volumes(tmp_path / "in", volumes, tags, GEOMETRIES["flipped"])
    vol = medsr.load_volume(tmp_path / "in")
    out = medsr.save_volume(vol, tmp_path / "out")
    datasets = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len(datasets) == 3 * SHAPE[2]
    assert len({str(ds.SeriesInstanceUID) for ds in datasets}) == 1
    assert len({int(ds.InstanceNumber) for ds in datasets}) == len(datasets)
    assert {int(ds.NumberOfTemporalPositions) for ds in datasets} == {3}
    assert sorted({int(ds.TemporalPositionIdentifier) for ds in datasets}) == [1, 2, 3]
    assert all(ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian for ds in datasets)
    back = medsr.load_volume(out)
    frames, affine, _ = volume_frames(back)
    np.testing.assert_array_equal(frames, volume_frames(vol)[0])
    np.testing.assert_allclose(affine, volume_frames(vol)[1], atol=1e-4)


def test_dwi_volumes_by_b_value_and_direction_in_acquisition_order(tmp_path):
    volumes = stack(3, seed=2)
    tags = [{"DiffusionBValue": 1000.0, "DiffusionGradientOrientation": [1.0, 0.0, 0.0]},
            {"DiffusionBValue": 0.0, "DiffusionGradientOrientation": [0.0, 0.0, 0.0]},
            {"DiffusionBValue": 1000.0, "DiffusionGradientOrientation": [0.0, 1.0, 0.0]}]
    write_volumes(tmp_path / "dwi", volumes, tags, GEOMETRIES["tilted"])
    vol = medsr.load_volume(tmp_path / "dwi")
    frames, _, source = volume_frames(vol)
    for t in range(3):  # InstanceNumber order, not sorted by b-value
        np.testing.assert_array_equal(frames[t], volumes[t])
    labels = source.extra["frames"]
    assert [v["DiffusionBValue"] for v in labels] == [1000, 0, 1000]
    assert labels[2]["DiffusionGradientOrientation"] == [0.0, 1.0, 0.0]


def test_multi_echo_gives_one_image_per_echo(tmp_path):
    """Echoes are separate images, picked like a series (``UID:e1``), never one 4D mix."""
    volumes = stack(2, seed=9)
    tags = [{"EchoNumbers": 2, "EchoTime": 20.0}, {"EchoNumbers": 1, "EchoTime": 10.0}]
    write_volumes(tmp_path / "me", volumes, tags, GEOMETRIES["anisotropic"])
    uid = str(pydicom.dcmread(next((tmp_path / "me").iterdir())).SeriesInstanceUID)
    with pytest.raises(MedsrError, match=f"holds 2 images.*{uid}:e1 .*{uid}:e2 ") as err:
        medsr.load_volume(tmp_path / "me")
    assert "\n" not in str(err.value)
    from medsr.io.dicom import series_images

    assert [key for key, _ in series_images(tmp_path / "me")] == [f"{uid}:e1", f"{uid}:e2"]
    for echo, expected in ((1, volumes[1]), (2, volumes[0])):
        frames, _, _ = volume_frames(medsr.load_volume(tmp_path / "me",
                                                       series_uid=f"{uid}:e{echo}"))
        assert frames.shape[0] == 1
        np.testing.assert_array_equal(frames[0], expected)
    with pytest.raises(MedsrError, match="image 'e3' not found.*:e1 .*:e2 "):
        medsr.load_volume(tmp_path / "me", series_uid=f"{uid}:e3")


def test_truly_ambiguous_duplicates_are_refused(tmp_path):
    """Copies at the same places with the same InstanceNumbers: nothing orders them."""
    volumes = stack(2, seed=4)
    write_volumes(tmp_path / "dup", volumes, [{"AcquisitionNumber": 1}] * 2,
                  GEOMETRIES["anisotropic"], shuffle=False)
    for file in (tmp_path / "dup").iterdir():
        ds = pydicom.dcmread(file)
        ds.InstanceNumber = (int(ds.InstanceNumber) - 1) % SHAPE[2] + 1
        ds.save_as(file, enforce_file_format=True)
    with pytest.raises(MedsrError, match="duplicate slice position.*tells") as err:
        medsr.load_volume(tmp_path / "dup")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- enhanced
def write_enhanced_stacks(file: Path, volumes: list[np.ndarray], lps_list: list[np.ndarray],
                          seed: int = 1) -> None:
    """An Enhanced MR file: one stack per volume (StackID, TemporalPositionIndex,
    DimensionIndexValues), frames stored in shuffled order."""
    ds = enhanced_dataset()
    nz = volumes[0].shape[2]
    ds.NumberOfFrames = len(volumes) * nz
    _image_attrs(ds, volumes[0])
    dims = []
    for pointer in (0x00209056, 0x00209057):  # StackID, InStackPositionNumber
        item = Dataset()
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = 0x00209111
        dims.append(item)
    ds.DimensionIndexSequence = dims
    frames = [(t, k) for t in range(len(volumes)) for k in range(nz)]
    order = np.random.default_rng(seed).permutation(len(frames))
    groups, pixels = [], []
    for i in order:
        t, k = frames[i]
        lps = lps_list[t]
        r = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
        c = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
        group, position, orientation, measures, content = (Dataset() for _ in range(5))
        position.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        orientation.ImageOrientationPatient = [float(v) for v in (*r, *c)]
        measures.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])),
                                 float(np.linalg.norm(lps[:3, 0]))]
        measures.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        content.StackID = str(t + 1)
        content.InStackPositionNumber = k + 1
        content.TemporalPositionIndex = t + 1
        content.DimensionIndexValues = [t + 1, k + 1]
        group.PlanePositionSequence = [position]
        group.PlaneOrientationSequence = [orientation]
        group.PixelMeasuresSequence = [measures]
        group.FrameContentSequence = [content]
        groups.append(group)
        pixels.append(volumes[t][:, :, k].T)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    ds.save_as(file, enforce_file_format=True)


def test_enhanced_stacks_on_one_grid_become_4d(tmp_path):
    volumes, lps = stack(3, seed=6), GEOMETRIES["oblique"]
    write_enhanced_stacks(tmp_path / "mf.dcm", volumes, [lps] * 3)
    vol = medsr.load_volume(tmp_path / "mf.dcm")
    frames, affine, source = volume_frames(vol)
    assert frames.shape == (3, *SHAPE)
    for t in range(3):
        np.testing.assert_array_equal(frames[t], volumes[t])
    np.testing.assert_allclose(affine, flip_lps_ras(lps), atol=1e-5)
    assert [v["TemporalPositionIndex"] for v in source.extra["frames"]] == [1, 2, 3]


def test_enhanced_stacks_on_different_grids_are_listed(tmp_path):
    volumes = stack(2, seed=8)
    write_enhanced_stacks(tmp_path / "mf.dcm", volumes,
                          [GEOMETRIES["anisotropic"], GEOMETRIES["oblique"]])
    with pytest.raises(MedsrError, match=r"2 volumes on different grids \(0: .*StackID 1.*; "
                                         r"1: .*StackID 2.*volume=N") as err:
        medsr.load_volume(tmp_path / "mf.dcm")
    assert "\n" not in str(err.value)
    second = medsr.load_volume(tmp_path / "mf.dcm", volume=1)
    array, affine, _ = volume_parts(second)
    np.testing.assert_array_equal(array, volumes[1])
    np.testing.assert_allclose(affine, flip_lps_ras(GEOMETRIES["oblique"]), atol=1e-5)


# ----------------------------------------------------------------------------------- compressed
COMPRESSED = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "jpeg_lossless_sv1"]


def compressed_series(name: str, folder: Path, slices: int = 3) -> np.ndarray:
    """A 3-slice series whose slices are copies of a compressed single-slice file."""
    src = DATA / "MR_small_jpeg_lossless_sv1.dcm" if name == "jpeg_lossless_sv1" \
        else get_testdata_file(name)
    folder.mkdir()
    for k in range(slices):
        ds = pydicom.dcmread(src)
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness, ds.InstanceNumber = 2.0, k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{k}.dcm")
    return pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_pixel_data_is_decoded(tmp_path, name):
    pytest.importorskip("pylibjpeg")
    reference = compressed_series(name, tmp_path / "in")
    vol = medsr.load_volume(tmp_path / "in")
    array, _, source = volume_parts(vol)
    for k in range(3):
        np.testing.assert_array_equal(array[:, :, k], reference.T)
    assert source.dtype == "int16"
    out = medsr.save_volume(vol, tmp_path / "out")
    ds = pydicom.dcmread(next(out.iterdir()))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_compressed_without_decoder_names_the_extra(tmp_path, monkeypatch):
    compressed_series("MR_small_jp2klossless.dcm", tmp_path / "in")

    class Missing:
        is_available = False

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda uid: Missing())
    with pytest.raises(MedsrError, match=r'JPEG 2000.*pip install "medsr\[dicom\]"') as err:
        medsr.load_volume(tmp_path / "in")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------- quiet
def test_library_warnings_are_logged_not_printed(tmp_path, capfd, caplog):
    volumes = stack(1)
    write_volumes(tmp_path / "s", volumes, [{"StationName": "S"}], GEOMETRIES["anisotropic"])
    for file in (tmp_path / "s").iterdir():  # StationName (SH) of 22 characters, 3 files
        raw = file.read_bytes().replace(b"\x08\x00\x10\x10SH\x02\x00S ",
                                        b"\x08\x00\x10\x10SH\x16\x00" + b"X" * 22)
        file.write_bytes(raw)
    with caplog.at_level(logging.INFO, logger="medsr"):
        vol = medsr.load_volume(tmp_path / "s")
    assert tuple(vol.shape) == (1, *SHAPE)
    assert volume_parts(vol)[2].header.StationName == "X" * 22
    captured = capfd.readouterr()
    assert "exceeds" not in captured.err + captured.out
    infos = [r.getMessage() for r in caplog.records if r.name.startswith("medsr")]
    assert any(re.search(r": \d+ tags? longer than the standard allows$", m) for m in infos), infos
    assert all(r.levelno < logging.WARNING for r in caplog.records if r.name.startswith("medsr"))


def test_library_records_stay_with_the_thread_that_reads(caplog):
    """A decoder's error during a read joins that read's messages, off the terminal; what a
    library logs from another thread meanwhile reaches the user's handlers as usual."""
    import threading

    from medsr.io.quiet import quiet_libraries

    inside, done = threading.Event(), threading.Event()
    result = {}

    def read():
        with quiet_libraries("a.dcm") as messages:
            logging.getLogger("pydicom.pixels.decoders.base").error("decoder A failed")
            inside.set()
            done.wait(10)
        result["messages"] = messages

    with caplog.at_level(logging.INFO):
        reader = threading.Thread(target=read)
        reader.start()
        assert inside.wait(10)
        logging.getLogger("pydicom").warning("logged elsewhere")
        done.set()
        reader.join(10)
    assert result["messages"] == ["decoder A failed"]
    library = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("pydicom")]
    assert library == [("pydicom", "logged elsewhere")]
    # after the read, the library logs as it did before
    with caplog.at_level(logging.INFO):
        logging.getLogger("pydicom.pixels.decoders.base").error("after")
    assert caplog.records[-1].getMessage() == "after"


def test_lossily_compressed_input_is_named_before_a_learned_method_runs(tmp_path, caplog):
    """LossyImageCompression "01": its ratio and method are named in one warning, since the
    models learnt from no compression artefacts (and the self-check may miss them)."""
    from conftest import phantom
    from test_dicom import write_series

    values = np.rint(phantom((16, 14, 5)) + 100).astype(np.uint16)
    files = write_series(tmp_path / "s", values, GEOMETRIES["anisotropic"])
    for file in files:
        ds = pydicom.dcmread(file)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = ["10.2", "2.5"]
        ds.LossyImageCompressionMethod = ["ISO_10918_1", "ISO_15444_1"]
        ds.save_as(file)
    vol = medsr.load_volume(tmp_path / "s")
    assert volume_parts(vol)[2].lossy_compression() == "ratio 10:1, 2:1, ISO_10918_1, ISO_15444_1"
    with caplog.at_level(logging.WARNING, logger="medsr"):
        medsr.upscale(vol, (1, 1, 2), method="bspline")
        assert not caplog.records  # interpolation: nothing to say
        out = medsr.upscale(vol, (1, 1, 2), method="default", modality="MR", device="cpu")
    assert out.meta["medsr_input_lossy"] == "ratio 10:1, 2:1, ISO_10918_1, ISO_15444_1"
    from medsr.report import build_report

    assert "ratio 10:1" in build_report(vol, out)[0]  # the report's facts say so too
    warned = [r.getMessage() for r in caplog.records if "lossily" in r.getMessage()]
    assert len(warned) == 1 and "ratio 10:1" in warned[0] and "--method bspline" in warned[0]
    from typer.testing import CliRunner

    from medsr.cli import app

    shown = CliRunner().invoke(app, ["info", str(tmp_path / "s")])
    assert shown.exit_code == 0 and "lossily compressed before (ratio 10:1" in shown.output
    write_series(tmp_path / "p", values, GEOMETRIES["anisotropic"])  # no tag: no note
    assert volume_parts(medsr.load_volume(tmp_path / "p"))[2].lossy_compression() is None


@pytest.mark.parametrize("ratio, scale, method, uncertainty, ran", [
    ("339", (2, 2, 1), "auto", False, "bspline"),  # in-plane beyond 20:1: interpolated
    ("12.5", (2, 2, 1), "auto", False, "default in-plane"),  # below it: the network
    ("339", (2, 2, 1), "default", False, "default in-plane"),  # asked for: kept
    ("339", (2, 2, 1), "auto", True, "default in-plane"),  # an uncertainty map needs it
    ("339", (1, 1, 2), "auto", False, "default"),  # through-plane still gains: kept
])
def test_auto_interpolates_inplane_requests_compressed_beyond_20_to_1(
        tmp_path, caplog, ratio, scale, method, uncertainty, ran):
    from conftest import phantom
    from test_dicom import write_series

    values = np.rint(phantom((16, 14, 2)) + 100).astype(np.uint16)
    files = write_series(tmp_path / "s", values, GEOMETRIES["anisotropic"])
    for file in files:
        ds = pydicom.dcmread(file)
        ds.LossyImageCompression, ds.LossyImageCompressionRatio = "01", ratio
        ds.save_as(file)
    with caplog.at_level(logging.WARNING, logger="medsr"):
        out = medsr.upscale(tmp_path / "s", scale, method=method, modality="MR",
                            device="cpu", uncertainty=uncertainty)
    out = out[0] if uncertainty else out
    assert out.meta["medsr_method"] == ran
    said = " ".join(r.getMessage() for r in caplog.records)
    assert ("over 20:1" in said) == (ran == "bspline")
    assert ("lossily compressed before" in said) == (ran != "bspline")


# ----------------------------------------------------------------------------------- dcm2niix
@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
def test_mosaic_matches_dcm2niix(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from dcm2niix_compare import compare

    series = tmp_path / "series"
    series.mkdir()
    mosaic_file("siemens_dwi_0.dcm.gz", series / "b0.dcm", base=1)
    mosaic_file("siemens_dwi_1000.dcm.gz", series / "b1000.dcm", base=7)
    result = compare(series, tmp_path / "work")
    assert result["corner_mm"] < 0.5
    assert result["max_abs_diff"] == 0
    assert result["shape"] == (2, 128, 128, 48)


# ----------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.logs import HANDLER_NAME

    yield lambda *args: CliRunner().invoke(app, ["info", *map(str, args)])
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    logging.captureWarnings(False)


def test_info_lists_the_volumes_and_stays_quiet(tmp_path, cli):
    series = tmp_path / "series"
    series.mkdir()
    mosaic_file("siemens_dwi_0.dcm.gz", series / "b0.dcm")
    mosaic_file("siemens_dwi_1000.dcm.gz", series / "b1000.dcm")
    result = cli(series)
    assert result.exit_code == 0, result.output
    assert "128×128×48" in result.output
    assert re.search(r"^2 volumes \(AcquisitionNumber 1, 2; DiffusionBValue 0, 1000; "
                     r"DiffusionGradientOrientation \(0 0 0\), \(1 0\.0051 -0\.0051\)\)$",
                     result.output, re.MULTILINE), result.output
    assert "experimental" not in result.output

    write_volumes(tmp_path / "s", stack(1), [{"StationName": "S"}], GEOMETRIES["anisotropic"])
    for file in (tmp_path / "s").iterdir():
        file.write_bytes(file.read_bytes().replace(b"\x08\x00\x10\x10SH\x02\x00S ",
                                                   b"\x08\x00\x10\x10SH\x16\x00" + b"X" * 22))
    quiet = cli(tmp_path / "s")
    assert quiet.exit_code == 0 and "longer than" not in quiet.output
    assert re.search(r"^1 volume$", quiet.output, re.MULTILINE)
    loud = cli(tmp_path / "s", "-v")
    assert loud.exit_code == 0
    assert re.search(r"medsr\.io: .*1 tag longer than the standard allows", loud.output)
