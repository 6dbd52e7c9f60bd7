"""Readers and writers for NIfTI and ITK formats: exact geometry by round trip, headers kept."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import AFFINES, make_affine, phantom

import medsr
from medsr.errors import MedsrError
from medsr.io import SourceInfo, make_volume, volume_frames, volume_parts
from medsr.io.itk import affine_from_image

SUFFIXES = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


def write_nifti(path, data, affine, dtype=np.int16, **header):
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    for key, value in header.items():
        img.header[key] = value
    img.to_filename(str(path))
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_geometry_through_every_writer(tmp_path, affine, suffix):
    data = np.rint(phantom((12, 10, 6)))
    src = write_nifti(tmp_path / "in.nii.gz", data, affine)
    vol = medsr.load_volume(src)
    up = medsr.upscale(vol, (2, 1, 3))
    out = medsr.save_volume(up, tmp_path / f"out{suffix}")
    back = medsr.load_volume(out)
    np.testing.assert_allclose(back.affine.numpy(), up.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(back[0].numpy(), np.rint(up[0].numpy()))
    assert volume_parts(back)[2].dtype == "int16"


def test_itk_reader_matches_nibabel_on_the_same_grid(tmp_path, affine):
    """SimpleITK (LPS) and nibabel (RAS) agree on where every voxel is."""
    data = phantom((9, 8, 5))
    path = write_nifti(tmp_path / "a.nii.gz", data, affine, dtype=np.float32)
    nrrd = medsr.save_volume(medsr.load_volume(path), tmp_path / "a.nrrd")
    image = sitk.ReadImage(str(nrrd))
    np.testing.assert_allclose(affine_from_image(image), affine, atol=1e-5)
    # a physical point maps to the same voxel in both libraries
    ijk = (3, 5, 2)
    ras = affine @ np.r_[ijk, 1]
    lps = (-ras[0], -ras[1], ras[2])
    assert image.TransformPhysicalPointToIndex(lps) == ijk
    assert image[ijk] == pytest.approx(data[ijk])


def test_nifti_header_codes_and_fields_are_kept(tmp_path):
    affine = AFFINES["oblique"]
    src = write_nifti(tmp_path / "in.nii.gz", phantom((8, 8, 4)), affine,
                      descrip=b"scanner T1", xyzt_units=10, intent_name=b"sr-test")
    out = medsr.save_volume(medsr.upscale(src, (1, 1, 4)), tmp_path / "out.nii.gz")
    hdr = nib.load(str(out)).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 2
    assert hdr["descrip"].item() == b"scanner T1" and hdr["intent_name"].item() == b"sr-test"
    assert int(hdr["xyzt_units"]) == 10
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5)
    np.testing.assert_allclose(hdr.get_zooms(), (0.8, 0.8, 1.0), atol=1e-6)


@pytest.mark.parametrize("source_qform", [0, 1])
def test_sheared_sform_survives(tmp_path, source_qform):
    """A tilted acquisition (slice axis not orthogonal to the plane) keeps its exact sform, and
    gets no second, rigid geometry: a qform cannot hold a shear, so the source's own (a rigid
    approximation) is carried through the same index map when it had one, else none is
    written, and readers that prefer the qform (ITK) place output and input alike."""
    affine = AFFINES["anisotropic"].copy()
    affine[1, 2] = 1.2  # gantry tilt
    src = write_nifti(tmp_path / "in.nii.gz", phantom((8, 8, 4)), affine)
    if not source_qform:
        img = nib.load(str(src))
        img.set_qform(None, code=0)
        img.to_filename(str(src))
    out = medsr.save_volume(medsr.upscale(src, (1, 1, 2)), tmp_path / "out.nii")
    index_map = np.diag([1.0, 1.0, 0.5, 1.0])
    index_map[2, 3] = -0.25  # output voxel k is input voxel k / 2 - 1 / 4
    hdr, source = nib.load(str(out)).header, nib.load(str(src)).header
    np.testing.assert_allclose(hdr.get_sform(), affine @ index_map, atol=1e-5)
    assert int(hdr["qform_code"]) == source_qform
    if source_qform:
        assert np.abs(source.get_qform() - affine).max() > 0.1  # the source's is rigid
        np.testing.assert_allclose(hdr.get_qform(), source.get_qform() @ index_map, atol=1e-5)


def test_registered_file_keeps_its_scanner_qform(tmp_path):
    """A file whose qform (the scanner's grid) and sform (a registration's) differ, as FSL
    and SPM write them, keeps both, each through the same index map as the data."""
    scanner = AFFINES["oblique"]
    registered = make_affine(np.eye(3), (0.8, 0.8, 4.0), (-90.0, -126.0, -72.0))
    img = nib.Nifti1Image(phantom((8, 8, 4)).astype(np.int16), registered)
    img.set_qform(scanner, code=1)
    img.set_sform(registered, code=4)  # MNI
    img.to_filename(str(tmp_path / "in.nii.gz"))
    up = medsr.upscale(tmp_path / "in.nii.gz", (1, 1, 2))
    hdr = nib.load(str(medsr.save_volume(up, tmp_path / "out.nii.gz"))).header
    index_map = np.diag([1.0, 1.0, 0.5, 1.0])
    index_map[2, 3] = -0.25
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 4)
    np.testing.assert_allclose(hdr.get_qform(), scanner @ index_map, atol=1e-5)
    np.testing.assert_allclose(hdr.get_sform(), registered @ index_map, atol=1e-5)


def test_sheared_volume_from_another_format_gets_no_rigid_qform(tmp_path):
    """A tilted grid read from DICOM or NRRD (no NIfTI header) is written with its exact sform
    and no qform, not with the nearest rigid grid as a second geometry."""
    affine = AFFINES["oblique"].copy()
    affine[:3, 2] += 0.3 * affine[:3, 1]  # the slice axis leans towards the column axis
    vol = make_volume(phantom((8, 8, 4)), affine, SourceInfo("dicom", "", "int16"))
    hdr = nib.load(str(medsr.save_volume(vol, tmp_path / "o.nii.gz"))).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 1)
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-5)


def test_int16_output_is_rounded_and_clipped(tmp_path):
    data = np.zeros((6, 6, 4), np.float32)
    data[..., 1] = 40000.0
    data[..., 2] = -1000.4
    vol = make_volume(data, AFFINES["flipped"], SourceInfo("nifti", "", "int16"))
    back = nib.load(str(medsr.save_volume(vol, tmp_path / "o.nii.gz")))
    assert back.get_data_dtype() == np.int16
    stored = np.asanyarray(back.dataobj)
    assert stored[0, 0, 1] == 32767 and stored[0, 0, 2] == -1000


def test_dtype_override_and_scaled_nifti(tmp_path):
    data = phantom((8, 8, 4)) / 100.0
    img = nib.Nifti1Image(data, AFFINES["oblique"])
    img.set_data_dtype(np.int16)  # nibabel picks scl_slope to store floats as int16
    img.to_filename(str(tmp_path / "scaled.nii.gz"))
    vol = medsr.load_volume(tmp_path / "scaled.nii.gz")
    out = nib.load(str(medsr.save_volume(vol, tmp_path / "o.nii.gz")))
    assert out.get_data_dtype() == np.int16
    np.testing.assert_allclose(out.get_fdata(), data, atol=0.01)  # scaling refitted, not rounded
    f32 = nib.load(str(medsr.save_volume(vol, tmp_path / "f.nii.gz", dtype="float32")))
    assert f32.get_data_dtype() == np.float32


@pytest.mark.parametrize("shape,word", [((16,), "1D"), ((8, 8, 4, 3, 2), "5D")])
def test_1d_and_5d_images_are_refused(tmp_path, shape, word):
    path = tmp_path / "img.nii.gz"
    nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)).to_filename(str(path))
    with pytest.raises(MedsrError, match=word):
        medsr.load_volume(path)


def four_d(shape=(9, 8, 5), count=3) -> np.ndarray:
    """(X, Y, Z, T) time series: each volume a different phantom."""
    return np.stack([np.rint(phantom(shape, seed=t)) + 100 * t for t in range(count)], axis=-1)


@pytest.mark.parametrize("name", ["oblique_flipped", "flipped"])
def test_nifti_4d_round_trip_keeps_time_axis_and_header(tmp_path, name):
    data, affine = four_d(), AFFINES[name]
    src = write_nifti(tmp_path / "fmri.nii.gz", data, affine, intent_code=2001)
    img = nib.load(str(src))
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 2500.0
    nib.Nifti1Image(img.get_fdata().astype(np.int16), None, img.header).to_filename(str(src))
    vol = medsr.load_volume(src)
    assert tuple(vol.shape) == (3, 9, 8, 5)
    frames, vol_affine, _ = volume_frames(vol)
    np.testing.assert_array_equal(frames, np.moveaxis(data, -1, 0))
    np.testing.assert_allclose(vol_affine, affine, atol=1e-5)
    with pytest.raises(ValueError, match="4D volume of 3 volumes"):
        volume_parts(vol)
    out = nib.load(str(medsr.save_volume(vol, tmp_path / "out.nii.gz")))
    assert out.shape == (9, 8, 5, 3)
    np.testing.assert_array_equal(out.get_fdata(), data)
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert out.header.get_xyzt_units() == ("mm", "msec")
    assert float(out.header["pixdim"][4]) == 2500.0
    assert int(out.header["intent_code"]) == 2001
    assert out.get_data_dtype() == np.int16


def test_load_one_volume_of_a_4d_file(tmp_path):
    data = four_d(count=4)
    src = write_nifti(tmp_path / "dwi.nii.gz", data, AFFINES["oblique"])
    one = medsr.load_volume(src, volume=2)
    assert tuple(one.shape) == (1, 9, 8, 5)
    array, one_affine, _ = volume_parts(one)
    np.testing.assert_array_equal(array, data[..., 2])
    np.testing.assert_allclose(one_affine, AFFINES["oblique"], atol=1e-5)
    out = nib.load(str(medsr.save_volume(one, tmp_path / "one.nii.gz")))
    assert out.shape == (9, 8, 5)
    np.testing.assert_array_equal(out.get_fdata(), data[..., 2])
    for bad in (4, -1):
        with pytest.raises(MedsrError, match=r"volume .* out of range.*4 volumes") as err:
            medsr.load_volume(src, volume=bad)
        assert "\n" not in str(err.value)


def test_single_time_point_4d_is_3d(tmp_path):
    data = np.rint(phantom((9, 8, 5)))[..., None]
    src = write_nifti(tmp_path / "t1.nii.gz", data, AFFINES["flipped"])
    vol = medsr.load_volume(src)
    assert tuple(vol.shape) == (1, 9, 8, 5)
    assert tuple(medsr.load_volume(src, volume=0).shape) == (1, 9, 8, 5)
    with pytest.raises(MedsrError, match="out of range"):
        medsr.load_volume(src, volume=1)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_4d_round_trip(tmp_path, suffix):
    data, affine = four_d(), AFFINES["oblique_flipped"]
    vol = make_volume(np.moveaxis(data, -1, 0), affine,
                      SourceInfo(format="array", path="", dtype="int16"))
    back = medsr.load_volume(medsr.save_volume(vol, tmp_path / f"out{suffix}"))
    assert tuple(back.shape) == (3, 9, 8, 5)
    frames, back_affine, source = volume_frames(back)
    np.testing.assert_array_equal(frames, np.moveaxis(data, -1, 0))
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)
    assert source.dtype == "int16"


def test_make_volume_shapes():
    source = SourceInfo(format="array", path="", dtype="float32")
    assert tuple(make_volume(np.zeros((4, 3, 2)), np.eye(4), source).shape) == (1, 4, 3, 2)
    assert tuple(make_volume(np.zeros((5, 4, 3, 2)), np.eye(4), source).shape) == (5, 4, 3, 2)
    three, _, _ = volume_frames(make_volume(np.ones((4, 3, 2)), np.eye(4), source))
    assert three.shape == (1, 4, 3, 2)
    with pytest.raises(ValueError):
        make_volume(np.zeros((4, 3)), np.eye(4), source)


def test_truncated_and_missing_files_give_one_line_errors(tmp_path):
    path = write_nifti(tmp_path / "ok.nii.gz", phantom((16, 16, 8)), np.eye(4))
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MedsrError, match="cannot read") as err:
        medsr.load_volume(cut)
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(MedsrError, match="cannot read"):
        medsr.load_volume(junk)
    with pytest.raises(MedsrError, match="no such file"):
        medsr.load_volume(tmp_path / "nope.nii.gz")
    assert gzip.decompress(raw)  # the intact file stays readable


def test_conflicting_outputs_are_refused(tmp_path):
    src = write_nifti(tmp_path / "in.nii.gz", phantom((8, 8, 4)), np.eye(4))
    vol = medsr.load_volume(src)
    before = src.read_bytes()
    with pytest.raises(MedsrError, match="overwrite the input"):
        medsr.save_volume(vol, src, force=True)
    assert src.read_bytes() == before
    out = medsr.save_volume(vol, tmp_path / "out.nii.gz")
    with pytest.raises(MedsrError, match="--force"):
        medsr.save_volume(vol, out)
    medsr.save_volume(vol, out, force=True)
    with pytest.raises(MedsrError, match="does not exist"):
        medsr.save_volume(vol, tmp_path / "no" / "out.nii.gz")
    with pytest.raises(MedsrError, match="format"):
        medsr.save_volume(vol, tmp_path / "out.xyz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "out.nii.gz"]


#: real NIfTI headers shipped with nibabel: both transforms coded (2,2 and 1,1), an sform
#: only, a 4D EPI, a NIfTI-2 file
REAL_HEADERS = ["anatomical.nii", "functional.nii", "reoriented_anat_moved.nii",
                "standard.nii.gz", "example4d.nii.gz", "example_nifti2.nii.gz"]


@pytest.mark.parametrize("name", REAL_HEADERS)
def test_real_headers_keep_both_transforms_and_overlay_in_itk(tmp_path, name):
    """On files written by other tools, the output's best affine and its qform are the
    source's through the same index map, and SimpleITK (which prefers the qform) places
    output and input alike wherever it can read the input."""
    from nibabel.testing import data_path

    path = f"{data_path}/{name}"
    source = nib.load(path)
    out = medsr.save_volume(medsr.upscale(path, (1, 1, 2), method="linear"),
                            tmp_path / "out.nii.gz")
    index_map = np.diag([1.0, 1.0, 0.5, 1.0])
    index_map[2, 3] = -0.25
    header = nib.load(str(out)).header
    shape = header.get_data_shape()[:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T

    def same_place(a, b):  # every corner voxel within 0.01 mm (quaternions are float32)
        np.testing.assert_allclose(a @ corners, b @ corners, atol=1e-2)

    same_place(header.get_best_affine(), source.affine @ index_map)
    own = source.header.get_qform() if source.header["qform_code"] > 0 else source.affine
    same_place(header.get_qform(), own @ index_map)
    try:
        reference = affine_from_image(sitk.ReadImage(path))
    except RuntimeError:  # NIfTI-2: ITK cannot read the input
        return
    same_place(affine_from_image(sitk.ReadImage(str(out))), reference @ index_map)
