"""4D DICOM as each vendor writes it when the standard tags are missing or equal (issue 32):
GE fMRI and DWI without temporal tags, Philips DWI with private b-values and a derived trace
image, magnitude and phase in one series, headers scanned once, and what a NIfTI output
carries beside it (JSON sidecar, FSL .bval/.bvec in the output's own axes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage, generate_uid
from test_dicom import GEOMETRIES, _file_dataset, _image_attrs

import medsr
from medsr.errors import MedsrError
from medsr.io import save_volume, volume_frames
from medsr.io.sidecar import diffusion_tables

SHAPE = (6, 5, 5)


def write_classic(folder: Path, volumes: list[np.ndarray], lps: np.ndarray, *,
                  per_volume: list[dict] | None = None, private: list[dict] | None = None,
                  slice_order: list[int] | None = None, manufacturer: str = "GE MEDICAL SYSTEMS",
                  extra: dict | None = None, seed: int = 5) -> str:
    """A classic series of volumes at the same places, as a scanner writes it without
    temporal tags: InstanceNumber counts frames in acquisition order (volume by volume, the
    slices of each in ``slice_order``), file names are shuffled. ``per_volume`` sets standard
    keywords and ``private`` private tags ``{(group, element): (VR, value)}`` per volume.
    Returns the SeriesInstanceUID."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uid = generate_uid()
    r = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    c = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    nz = volumes[0].shape[2]
    order = slice_order or list(range(nz))
    names = rng.permutation(len(volumes) * nz)
    number = 0
    for t, stored in enumerate(volumes):
        for k in order:
            number += 1
            ds = _file_dataset(MRImageStorage)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientName, ds.PatientID, ds.Modality = "Test^Vendor", "PID9", "MR"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", uid
            ds.FrameOfReferenceUID, ds.Manufacturer = "1.2.3.5", manufacturer
            ds.InstanceNumber = number
            ds.AcquisitionNumber = 1
            ds.EchoNumbers, ds.EchoTime, ds.RepetitionTime = 1, 30.0, 2000.0
            ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
            ds.ImageOrientationPatient = [float(v) for v in (*r, *c)]
            ds.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])),
                               float(np.linalg.norm(lps[:3, 0]))]
            ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
            for key, value in {**(extra or {}), **(per_volume or [{}] * len(volumes))[t]
                               }.items():
                setattr(ds, key, value)
            for (group, element), (vr, value) in ((private or [{}] * len(volumes))[t]).items():
                ds.add_new((group, element), vr, value)
            _image_attrs(ds, stored)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            ds.save_as(folder / f"i{names[number - 1]:05d}.MRDC", enforce_file_format=True)
    return uid


def volumes_of(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 3000, SHAPE).astype(np.uint16) for _ in range(count)]


# ----------------------------------------------------------------------------------- GE
def test_ge_interleaved_fmri_without_temporal_tags(tmp_path):
    """GE classic fMRI: no TemporalPositionIdentifier, one AcquisitionNumber; the n-th frame
    at each place (InstanceNumber order, slices interleaved) belongs to volume n."""
    volumes = volumes_of(4, seed=1)
    write_classic(tmp_path / "fmri", volumes, GEOMETRIES["oblique"],
                  slice_order=[0, 2, 4, 1, 3],
                  extra={"TriggerTime": 0.0})
    frames, _, source = volume_frames(medsr.load_volume(tmp_path / "fmri"))
    assert frames.shape == (4, *SHAPE)
    for t in range(4):
        np.testing.assert_array_equal(frames[t], volumes[t])
    assert source.extra["frames"] == [{}, {}, {}, {}]


def test_ge_slice_times_from_trigger_time(tmp_path):
    volumes = volumes_of(2, seed=8)
    order = [0, 2, 4, 1, 3]
    times = {k: 400.0 * i for i, k in enumerate(order)}  # ms after the volume's start
    folder = tmp_path / "stc"
    write_classic(folder, volumes, GEOMETRIES["anisotropic"], slice_order=order)
    for file in folder.iterdir():  # TriggerTime: the slice's time within its volume
        ds = pydicom.dcmread(file)
        k = round((float(ds.ImagePositionPatient[2]) - 12.0) / 5.0)
        ds.TriggerTime = times[k]
        ds.save_as(file, enforce_file_format=True)
    frames = medsr.io.read_frames(folder)
    assert frames.source.extra["slice_timing"] == [0.0, 1.2, 0.4, 1.6, 0.8]


def _ge_protocol(lines: dict[str, str], sequence: str = "epiRT") -> dict:
    """GE private tags of an EPI series: the pulse sequence name and the protocol data block
    (0025,101B: a 4-byte length, then gzip-compressed ``KEY "value"`` lines)."""
    import gzip
    import struct

    text = "".join(f'{key} "{value}"\n' for key, value in lines.items()).encode()
    packed = gzip.compress(text)
    return {(0x0019, 0x0010): ("LO", "GEMS_ACQU_01"), (0x0019, 0x109C): ("LO", sequence),
            (0x0025, 0x0010): ("LO", "GEMS_SERS_01"),
            (0x0025, 0x101B): ("OB", struct.pack("<I", len(packed)) + packed)}


def test_ge_slice_times_from_the_protocol_data_block(tmp_path):
    """GE EPI: slice times from the protocol block's SLICEORDER (interleaved), not from a
    TriggerTime that disagrees, in the output's slice order (a descending series: reversed),
    as dcm2niix computes them; written to the JSON sidecar."""
    volumes = volumes_of(2, seed=11)
    folder = tmp_path / "rt"
    block = {"IOPT": "EDR, EPI, FMRI", "SLICEORDER": "1", "VIEWORDER": "0", "NOSLC": "5"}
    write_classic(folder, volumes, GEOMETRIES["flipped"], private=[_ge_protocol(block)] * 2,
                  extra={"TriggerTime": 0.0, "SoftwareVersions": "DV28.0_R02_1947.a"})
    image = medsr.load_volume(folder)
    # prescription (InstanceNumber) order: excitations 0, 3, 1, 4, 2 of 0.4 s; stored
    # descending, so read back reversed
    expected = [0.0, 1.2, 0.4, 1.6, 0.8][::-1]
    assert volume_frames(image)[2].extra["slice_timing"] == pytest.approx(expected)
    save_volume(image, tmp_path / "out.nii.gz")
    assert json.loads((tmp_path / "out.json").read_text())["SliceTiming"] == \
        pytest.approx(expected)


@pytest.mark.parametrize("count, mb, interleaved, version, expected_slots", [
    (6, 2, True, "DV26.0_R01_1725.a", [0, 2, 1] * 2),  # 3 excitations
    (8, 2, True, "DV26.0_R01_1725.a", [0, 3, 1, 4, 2, 0, 3, 1]),  # 4 -> 5 before 27.0 R03
    (8, 2, True, "DV28.0_R02_1947.a", [0, 3, 1, 2] * 2),  # 27.0 R03+: last and 3rd-last swap
    (5, 1, False, "DV28.0_R02_1947.a", [0, 1, 2, 3, 4]),
])
def test_ge_multiband_excitation_order(count, mb, interleaved, version, expected_slots):
    """GE HyperBand: slices share excitations (slice k: excitation k mod n); the excitation
    count and order depend on the software release, as dcm2niix reads them."""
    from pydicom.dataset import Dataset

    from medsr.io.dicom_timing import ge_excitation_times, ge_version

    ds = Dataset()
    ds.SoftwareVersions = ["28", "LX", f"MR Software release:{version}"]
    shots = max(expected_slots) + 1
    times = ge_excitation_times(count, 2.0, mb, interleaved, *ge_version(ds))
    assert times == pytest.approx([slot * 2.0 / shots for slot in expected_slots])


# ----------------------------------------------------------------------------------- enhanced
def _timed_enhanced(file: Path, times: list[list[float]], siemens: str | None = None) -> None:
    """An Enhanced MR file of ``len(times)`` volumes of 5 slices (the stacks of
    ``write_enhanced_stacks``) whose frame of volume t, slice k was acquired ``times[t][k]``
    seconds after 12:00:00: as FrameAcquisitionDateTime, or as Siemens XA's TimeAfterStart
    (0021,1104) in the frame's private group (0021,11FE) with ``siemens`` as
    SoftwareVersions."""
    from pydicom.dataset import Dataset
    from test_dicom_scanner import stack, write_enhanced_stacks

    write_enhanced_stacks(file, stack(len(times), seed=12), [GEOMETRIES["anisotropic"]]
                          * len(times))
    ds = pydicom.dcmread(file)
    timing = Dataset()
    timing.RepetitionTime = 2000.0
    ds.SharedFunctionalGroupsSequence = [Dataset()]
    ds.SharedFunctionalGroupsSequence[0].MRTimingAndRelatedParametersSequence = [timing]
    for group in ds.PerFrameFunctionalGroupsSequence:
        content = group.FrameContentSequence[0]
        t, k = int(content.StackID) - 1, int(content.InStackPositionNumber) - 1
        if siemens is None:
            content.FrameAcquisitionDateTime = f"20240101{120000 + times[t][k]:013.6f}"
        else:
            item = Dataset()
            item.add_new((0x0021, 0x0011), "LO", "SIEMENS MR SDI 02")
            item.add_new((0x0021, 0x1104), "DS", f"{times[t][k]:.4f}")
            group.add_new((0x0021, 0x0010), "LO", "SIEMENS MR SDI 02")
            group.add_new((0x0021, 0x11FE), "SQ", [item])
    if siemens is not None:
        ds.Manufacturer, ds.SoftwareVersions = "Siemens Healthineers", siemens
    ds.save_as(file, enforce_file_format=True)


INTERLEAVED = [0.0, 1.2, 0.4, 1.6, 0.8]


@pytest.mark.parametrize("siemens", [None, "syngo MR XA60"])
def test_enhanced_slice_times_from_frame_times(tmp_path, siemens):
    """Enhanced multi-frame: each slice's time is its frame's (FrameAcquisitionDateTime, or
    Siemens XA's TimeAfterStart), less the volume's first; TR from the shared group."""
    _timed_enhanced(tmp_path / "mf.dcm", [[t * 2.0 + s for s in INTERLEAVED]
                                          for t in range(3)], siemens)
    frames = medsr.io.read_frames(tmp_path / "mf.dcm")
    assert frames.source.extra["slice_timing"] == pytest.approx(INTERLEAVED)


def test_siemens_xa10_slice_times_from_the_second_volume(tmp_path):
    """Siemens XA10 to XA30 write wrong times for the first volume's frames: as dcm2niix,
    the second volume's are used."""
    bogus = [0.3, 0.0, 0.1, 0.2, 0.25]
    _timed_enhanced(tmp_path / "mf.dcm", [bogus] + [[t * 2.0 + s for s in INTERLEAVED]
                                                    for t in (1, 2)], "syngo MR XA10")
    frames = medsr.io.read_frames(tmp_path / "mf.dcm")
    assert frames.source.extra["slice_timing"] == pytest.approx(INTERLEAVED)


# ----------------------------------------------------------------------------------- Siemens
def test_siemens_mosaic_without_acquisition_times_uses_its_protocol(tmp_path, monkeypatch):
    """A mosaic without MosaicRefAcqTimes (VB12/VB13): times from the protocol's
    sSliceArray.ucMode (here 0x2, descending) spread over TR, as dcm2niix's rescue; they
    agree with the times the real header does carry (within 0.03 s)."""
    from test_dicom_scanner import mosaic_file

    from medsr.io import mosaic

    series = tmp_path / "series"
    series.mkdir()
    mosaic_file("siemens_dwi_0.dcm.gz", series / "a.dcm")
    mosaic_file("siemens_dwi_1000.dcm.gz", series / "b.dcm")
    ds = pydicom.dcmread(series / "a.dcm")
    carried = [t / 1000.0 for t in mosaic.mosaic_times(ds, "a.dcm")]
    monkeypatch.setattr(mosaic, "mosaic_times", lambda ds, name: None)
    timing = medsr.io.read_frames(series).source.extra["slice_timing"]
    assert timing == pytest.approx([(47 - k) * 6.6 / 48 for k in range(48)], abs=1e-6)
    assert timing == pytest.approx(carried, abs=0.03)


@pytest.mark.parametrize("count, slots", [(5, [0, 3, 1, 4, 2]), (4, [2, 0, 3, 1])])
def test_siemens_protocol_interleaved_order(count, slots):
    """Interleaved (ucMode 0x4): odd counts start with the first slice, even counts with the
    second, as Siemens acquires them; the delay in TR (us) shortens the spread."""
    from pydicom.dataset import Dataset

    from medsr.io.dicom_timing import siemens_protocol_times

    ds = Dataset()
    ds.Manufacturer, ds.ImageType, ds.RepetitionTime = "SIEMENS", ["M", "MOSAIC"], 2000
    ascconv = "### ASCCONV BEGIN ###\nsSliceArray.ucMode = 0x4\nlDelayTimeInTR = 400000\n"
    ds.add_new((0x0029, 0x1020), "OB", (ascconv + "### ASCCONV END ###").encode())
    assert siemens_protocol_times(ds, count) == pytest.approx([s * 1.6 / count for s in slots])


def test_first_volume_times_beyond_tr_give_way_to_the_second(tmp_path, monkeypatch):
    """A first volume whose MosaicRefAcqTimes span more than TR (CMRR multiband): the
    second volume's times are used, as dcm2niix does."""
    from test_dicom_scanner import mosaic_file

    from medsr.io import mosaic

    series = tmp_path / "series"
    series.mkdir()
    mosaic_file("siemens_dwi_0.dcm.gz", series / "first.dcm")
    mosaic_file("siemens_dwi_1000.dcm.gz", series / "second.dcm")
    good = [float(k % 24) * 250.0 for k in range(48)]
    monkeypatch.setattr(mosaic, "mosaic_times", lambda ds, name: [
        t * 2.0 for t in good] if name == "first.dcm" else good)
    timing = medsr.io.read_frames(series).source.extra["slice_timing"]
    assert timing == pytest.approx([t / 1000.0 for t in good])


def _ge_dwi_private(b: float, g: tuple[float, float, float]) -> dict:
    return {(0x0043, 0x0010): ("LO", "GEMS_PARM_01"),
            (0x0043, 0x1039): ("IS", [int(b) + 1_000_000_000 * (b > 0), 8, 0, 0]),
            (0x0019, 0x0010): ("LO", "GEMS_ACQU_01"),
            (0x0019, 0x10BB): ("DS", g[0]), (0x0019, 0x10BC): ("DS", g[1]),
            (0x0019, 0x10BD): ("DS", g[2])}


def test_ge_dwi_with_private_b_values_and_repeated_b0(tmp_path):
    """Two b=0 volumes at the start: b-value and direction do not tell the volumes apart,
    acquisition order does; labels come from (0043,1039) and (0019,10bb/bc/bd), the
    directions turned into patient axes (row, column, reversed normal, as dcm2niix)."""
    volumes = volumes_of(4, seed=2)
    table = [(0, (0, 0, 0)), (0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0.0, 0.6, 0.8))]
    lps = GEOMETRIES["oblique"]
    write_classic(tmp_path / "dwi", volumes, lps,
                  private=[_ge_dwi_private(b, g) for b, g in table])
    frames, _, source = volume_frames(medsr.load_volume(tmp_path / "dwi"))
    for t in range(4):
        np.testing.assert_array_equal(frames[t], volumes[t])
    labels = source.extra["frames"]
    assert [v["DiffusionBValue"] for v in labels] == [0, 0, 1000, 1000]
    row = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    normal = np.cross(row, col)
    np.testing.assert_allclose(labels[2]["DiffusionGradientOrientation"], row, atol=1e-4)
    np.testing.assert_allclose(labels[3]["DiffusionGradientOrientation"],
                               0.6 * col - 0.8 * normal, atol=1e-4)


def _pepolar(mode: int) -> dict:
    return {(0x0019, 0x0010): ("LO", "GEMS_ACQU_01"),
            (0x0019, 0x109C): ("LO", "research/ABCD/epi_pepolar"),
            (0x0019, 0x10B3): ("DS", f"{mode:.6f}")}


@pytest.mark.parametrize("mode, reversed_", [(2, (0, 2)), (3, (1, 3))])
def test_ge_pepolar_polarities_are_two_images_rows_put_back(tmp_path, mode, reversed_):
    """GE epi_pepolar: UserData12 (0019,10B3) mode 2 reverses the odd volumes
    (TemporalPositionIdentifier 1, 3), mode 3 the even ones; they are stored with their rows
    reversed and nothing else says so. Each polarity is an image of its own (``:fwd``,
    ``:rev``), the reversed one's rows put back (as dcm2niix's ``_1006``)."""
    volumes = volumes_of(4, seed=9)
    stored = [v[:, ::-1, :] if t in reversed_ else v for t, v in enumerate(volumes)]
    uid = write_classic(tmp_path / "fm", stored, GEOMETRIES["oblique"],
                        per_volume=[{"TemporalPositionIdentifier": t + 1} for t in range(4)],
                        private=[_pepolar(mode)] * 4)
    with pytest.raises(MedsrError, match=f"holds 2 images.*{uid}:fwd .*{uid}:rev "):
        medsr.load_volume(tmp_path / "fm")
    from medsr.io.dicom import series_images

    assert [(k, v["polarity"]) for k, v in series_images(tmp_path / "fm")] == [
        (f"{uid}:fwd", "fwd"), (f"{uid}:rev", "rev")]
    for name, picked in (("rev", reversed_), ("fwd", sorted({0, 1, 2, 3} - set(reversed_)))):
        frames, _, source = volume_frames(medsr.load_volume(tmp_path / "fm",
                                                            series_uid=f"{uid}:{name}"))
        assert frames.shape == (2, *SHAPE) and source.extra["image"] == name
        for t, index in enumerate(picked):
            np.testing.assert_array_equal(frames[t], volumes[index])


def test_ge_pepolar_all_reversed_is_one_image(tmp_path):
    """Mode 1: every volume reversed, one image with every volume's rows put back; mode 0 (all
    forward) is read as stored."""
    volumes = volumes_of(2, seed=10)
    for mode, stored in ((1, [v[:, ::-1, :] for v in volumes]), (0, volumes)):
        write_classic(tmp_path / str(mode), stored, GEOMETRIES["flipped"],
                      per_volume=[{"TemporalPositionIdentifier": t + 1} for t in range(2)],
                      private=[_pepolar(mode)] * 2)
        frames, _, _ = volume_frames(medsr.load_volume(tmp_path / str(mode)))
        for t in range(2):
            np.testing.assert_array_equal(frames[t][..., ::-1], volumes[t])


# ----------------------------------------------------------------------------------- Philips
def _philips(b: float, g: tuple[float, float, float], label: str) -> dict:
    return {(0x2001, 0x0010): ("LO", "Philips Imaging DD 001"),
            (0x2001, 0x1003): ("FL", float(b)), (0x2001, 0x1004): ("CS", label),
            (0x2005, 0x0010): ("LO", "Philips MR Imaging DD 001"),
            (0x2005, 0x10B0): ("FL", float(g[0])), (0x2005, 0x10B1): ("FL", float(g[1])),
            (0x2005, 0x10B2): ("FL", float(g[2]))}


def test_philips_dwi_private_b_values_and_trace_left_out(tmp_path, caplog):
    """Philips classic DWI: b-values and directions only in (2001,1003) and (2005,10b0..b2),
    and the scanner's isotropic (trace) image at the end: left out with one line."""
    volumes = volumes_of(4, seed=3)
    table = [(0, (0, 0, 0), "I"), (800, (1, 0, 0), "O"), (800, (0, 1, 0), "O"),
             (800, (0, 0, 0), "I")]
    write_classic(tmp_path / "dwi", volumes, GEOMETRIES["flipped"],
                  manufacturer="Philips Medical Systems",
                  private=[_philips(b, g, lab) for b, g, lab in table])
    with caplog.at_level(logging.WARNING, logger="medsr.io.dicom_groups"):
        frames, _, source = volume_frames(medsr.load_volume(tmp_path / "dwi"))
    assert frames.shape[0] == 3
    for t in range(3):
        np.testing.assert_array_equal(frames[t][..., ::-1], volumes[t])  # flipped: descending
    lines = [r.getMessage() for r in caplog.records if "derived" in r.getMessage()]
    assert len(lines) == 1 and "b=800" in lines[0]
    assert [v["DiffusionBValue"] for v in source.extra["frames"]] == [0, 800, 800]


# ----------------------------------------------------------------------------------- images
def test_magnitude_and_phase_are_separate_images(tmp_path):
    """Siemens-style ImageType M and P at the same places: two images, never one 4D mix."""
    mag, phase = volumes_of(2, seed=4)
    uid = write_classic(tmp_path / "fmap", [mag, phase], GEOMETRIES["anisotropic"],
                        manufacturer="SIEMENS",
                        per_volume=[{"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
                                    {"ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}])
    with pytest.raises(MedsrError, match=f"holds 2 images.*{uid}:mag .*{uid}:ph "):
        medsr.load_volume(tmp_path / "fmap")
    from medsr.io.dicom import series_images

    assert series_images(tmp_path / "fmap") == [
        (f"{uid}:mag", {"echo": 1, "te": 30.0, "type": "mag"}),
        (f"{uid}:ph", {"echo": 1, "te": 30.0, "type": "ph"})]
    for key, expected in ((f"{uid}:mag", mag), (f"{uid}:ph", phase)):
        frames, _, _ = volume_frames(medsr.load_volume(tmp_path / "fmap", series_uid=key))
        assert frames.shape[0] == 1
        np.testing.assert_array_equal(frames[0], expected)


def test_headers_of_a_folder_are_read_once(tmp_path, monkeypatch):
    """Reading several series of one folder scans each file's header once."""
    from medsr.io import dicom

    uids = [write_classic(tmp_path / "study" / f"s{s}", volumes_of(1, seed=s),
                          GEOMETRIES["anisotropic"], seed=s) for s in range(3)]
    calls = []
    original = dicom._scan_header
    monkeypatch.setattr(dicom, "_scan_header", lambda f: calls.append(f) or original(f))
    for uid in uids:
        medsr.load_volume(tmp_path / "study", series_uid=uid)
    assert len(calls) == 3 * SHAPE[2]  # every file once, not once per series
    (tmp_path / "study" / "new.dcm").write_bytes(next((tmp_path / "study" / "s0").iterdir())
                                                .read_bytes())
    medsr.load_volume(tmp_path / "study", series_uid=uids[1])
    assert len(calls) == 3 * SHAPE[2] + 1  # a new file is read; the others are not


# ----------------------------------------------------------------------------------- sidecars
def _dwi_series(folder: Path, lps: np.ndarray) -> tuple[list, list]:
    table = [(0, (0.0, 0.0, 0.0)), (1000, (1.0, 0.0, 0.0)),
             (1000, (0.0, 0.6, 0.8)), (2000, (0.48, -0.6, 0.64))]
    volumes = volumes_of(len(table), seed=6)
    write_classic(folder, volumes, lps, manufacturer="SIEMENS", per_volume=[
        {"DiffusionBValue": float(b), "DiffusionGradientOrientation": list(g)}
        for b, g in table])
    return table, volumes


@pytest.mark.parametrize("geometry", ["oblique", "flipped"])
def test_nifti_output_carries_bval_bvec_in_its_own_axes(tmp_path, geometry):
    """FSL reads a b-vector along the image's voxel axes (the first one negated when the
    affine's determinant is positive): turned back into the world, each must be the
    direction the scanner stored, on an oblique and on a flipped (descending) series."""
    table, _ = _dwi_series(tmp_path / "dwi", GEOMETRIES[geometry])
    vol = medsr.load_volume(tmp_path / "dwi")
    out = save_volume(vol, tmp_path / "dwi.nii.gz")
    bvals = [float(v) for v in (tmp_path / "dwi.bval").read_text().split()]
    bvecs = np.loadtxt(tmp_path / "dwi.bvec")
    assert bvals == [b for b, _ in table] and bvecs.shape == (3, 4)
    affine = nib.load(str(out)).affine
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    for (b, lps), vec in zip(table, bvecs.T):
        vec = vec.copy()
        if np.linalg.det(affine[:3, :3]) > 0:
            vec[0] = -vec[0]
        world_ras = axes @ vec
        np.testing.assert_allclose(world_ras, np.asarray(lps) * [-1, -1, 1], atol=1e-5)
    sidecar = json.loads((tmp_path / "dwi.json").read_text())
    assert sidecar["RepetitionTime"] == 2.0 and sidecar["EchoTime"] == 0.03
    assert sidecar["Manufacturer"] == "SIEMENS"
    assert sidecar["ConversionSoftwareVersion"] == medsr.__version__  # which medsr wrote it


def test_bvecs_survive_super_resolution_and_the_dicom_writer(tmp_path):
    _dwi_series(tmp_path / "dwi", GEOMETRIES["oblique"])
    vol = medsr.load_volume(tmp_path / "dwi")
    up = medsr.upscale(vol, scale=(1, 1, 2), method="bspline")
    assert up.shape[0] == 4
    save_volume(up, tmp_path / "up.nii.gz")
    save_volume(vol, tmp_path / "in.nii.gz")
    np.testing.assert_allclose(np.loadtxt(tmp_path / "up.bvec"), np.loadtxt(tmp_path /
                                                                           "in.bvec"),
                               atol=1e-6)
    save_volume(up, tmp_path / "series")  # a DICOM derived series keeps b-value and direction
    again = medsr.load_volume(tmp_path / "series")
    labels = volume_frames(again)[2].extra["frames"]
    assert [v["DiffusionBValue"] for v in labels] == [0, 1000, 1000, 2000]
    np.testing.assert_allclose(labels[3]["DiffusionGradientOrientation"], [0.48, -0.6, 0.64],
                               atol=1e-4)


def test_diffusion_tables_need_a_b_value_above_zero():
    assert diffusion_tables([{"DiffusionBValue": 0}, {}], np.eye(4)) is None
    assert diffusion_tables(None, np.eye(4)) is None
