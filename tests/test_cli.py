"""The ``medsr`` command through Typer's runner: outputs, messages, and bad input."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINES, phantom, write_phantom_nifti
from typer.testing import CliRunner

import medsr
from medsr.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scan(tmp_path):
    return write_phantom_nifti(tmp_path / "scan.nii.gz", AFFINES["oblique"])


def assert_one_line_error(result, text):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [[], ["upscale"], ["info"], ["sample"]])
def test_help_on_every_command(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_default_output_beside_input_made_near_isotropic(scan):
    before = digest(scan)
    result = run("upscale", scan)
    assert result.exit_code == 0, result.output
    out = scan.with_name("scan_sr.nii.gz")
    assert "16×14×5 at 0.8×0.8×4 mm -> 16×14×25 at 0.8×0.8×0.8 mm" in result.stdout
    img = nib.load(str(out))
    assert img.shape == (16, 14, 25) and img.get_data_dtype() == np.int16
    assert digest(scan) == before


def test_scale_method_format_and_spacing(scan, tmp_path):
    result = run("upscale", scan, "-o", tmp_path / "o.nrrd", "--scale", 2, 1, 1,
                 "--method", "linear")
    assert result.exit_code == 0, result.output
    assert medsr.load_volume(tmp_path / "o.nrrd").shape[1:] == (32, 14, 5)
    result = run("upscale", scan, "-o", tmp_path / "o2.nii", "--format", "nifti",
                 "--spacing", 0.8, 0.8, 2.0, "--dtype", "float32")
    assert result.exit_code == 0, result.output
    img = nib.load(str(tmp_path / "o2.nii"))
    assert img.shape == (16, 14, 10) and img.get_data_dtype() == np.float32


def test_many_inputs_into_a_folder(scan, tmp_path):
    other = tmp_path / "other.nii.gz"
    other.write_bytes(scan.read_bytes())
    result = run("upscale", scan, other, "-o", tmp_path / "out", "--scale", 1, 1, 2)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "other_sr.nii.gz", "scan_sr.nii.gz"]


def test_existing_output_needs_force(scan, tmp_path):
    out = tmp_path / "o.nii.gz"
    assert run("upscale", scan, "-o", out).exit_code == 0
    first = digest(out)
    assert_one_line_error(run("upscale", scan, "-o", out, "--scale", 1, 1, 2), "--force")
    assert digest(out) == first
    assert run("upscale", scan, "-o", out, "--scale", 1, 1, 2, "--force").exit_code == 0
    assert nib.load(str(out)).shape == (16, 14, 10)


def test_bad_input_gets_one_line(scan, tmp_path):
    before = digest(scan)
    assert_one_line_error(run("upscale", tmp_path / "missing.nii.gz"), "no such file")
    assert_one_line_error(run("upscale", scan, "--scale", 1, 1, 2.5), "positive integers")
    assert_one_line_error(run("upscale", scan, "--scale", 0, 1, 1), "positive integers")
    assert_one_line_error(run("upscale", scan, "-o", scan, "--force"), "overwrite the input")
    assert_one_line_error(run("upscale", scan, "-o", tmp_path / "x" / "o.nii.gz"),
                          "does not exist")
    assert_one_line_error(run("upscale", scan, "-o", "/proc/o.nii.gz"), "/proc")
    assert_one_line_error(run("upscale", scan, "--dtype", "complex64"), "unsupported --dtype")
    line = tmp_path / "line.nii.gz"
    nib.Nifti1Image(np.zeros((8, 1, 1), np.float32), np.eye(4)).to_filename(str(line))
    assert_one_line_error(run("upscale", line), "a line")
    line.unlink()
    flat = tmp_path / "flat.nii.gz"  # one slice: in-plane only
    nib.Nifti1Image(phantom((8, 8, 1)), np.diag([1.0, 1.0, 5.0, 1.0])).to_filename(str(flat))
    assert_one_line_error(run("upscale", flat, "--scale", 2, 2, 2), "--scale 2 2 1")
    assert_one_line_error(run("upscale", flat, "--isotropic", 1), "keeps its 5 mm")
    flat.unlink()
    assert_one_line_error(run("upscale", scan, "-o", tmp_path / "o.nrrd", "--format", "nifti"),
                          "does not match")
    nan = tmp_path / "nan.nii.gz"
    data = phantom((8, 8, 4))
    data[0, 0, 0] = np.inf
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(nan))
    assert_one_line_error(run("upscale", nan), "NaN/Inf")
    assert digest(scan) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.nii.gz", "scan.nii.gz"]


def test_failed_write_leaves_nothing_behind(scan, tmp_path, monkeypatch):
    import medsr.io.nifti as nifti

    def broken(volume, path, dtype=None):
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nifti, "write_nifti", broken)
    assert_one_line_error(run("upscale", scan, "-o", tmp_path / "o.nii.gz"), "No space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_dicom_in_shuffled_names_to_dicom_out_on_the_right_grid(tmp_path):
    """Shuffled file names in; a derived series out that SimpleITK and pydicom place correctly."""
    import pydicom
    from test_dicom import GEOMETRIES, sitk_read, write_series

    lps = GEOMETRIES["oblique"]
    stored = np.rint(phantom((12, 10, 5)) + 200).astype(np.uint16)
    files = write_series(tmp_path / "in", stored, lps, modality="CT", intercept=-1024)
    before = {f.name: digest(f) for f in files}
    result = run("upscale", tmp_path / "in", "-o", tmp_path / "out", "--scale", 1, 1, 3)
    assert result.exit_code == 0, result.output
    expected = medsr.upscale(tmp_path / "in", (1, 1, 3))
    values, affine = sitk_read(tmp_path / "out")
    np.testing.assert_allclose(affine, expected.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(values, np.rint(expected[0].numpy()))
    first = pydicom.dcmread(tmp_path / "out" / "IM000001.dcm")
    assert first.Modality == "CT" and list(first.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient],
                               (lps @ [0, 0, -1 / 3, 1])[:3], atol=1e-5)
    assert len(list((tmp_path / "out").iterdir())) == 15
    assert {f.name: digest(f) for f in files} == before
    # the default output of a DICOM folder is a DICOM folder beside it
    result = run("upscale", tmp_path / "in", "--scale", 1, 1, 2)
    assert result.exit_code == 0 and len(list((tmp_path / "in_sr").glob("*.dcm"))) == 10


def test_nifti_to_dicom_and_back_overlays(scan, tmp_path):
    result = run("upscale", scan, "-o", tmp_path / "dcm", "--format", "dicom", "--scale", 1, 1, 2)
    assert result.exit_code == 0, result.output
    back = medsr.load_volume(tmp_path / "dcm")
    direct = medsr.upscale(scan, (1, 1, 2))
    np.testing.assert_allclose(back.affine.numpy(), direct.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(back[0].numpy(), np.rint(direct[0].numpy()))


def test_info_and_sample(tmp_path):
    result = run("sample", tmp_path)
    assert result.exit_code == 0, result.output
    sample = tmp_path / "mr_brain_t1c.nrrd"
    result = run("info", sample)
    assert result.exit_code == 0 and "256×256×25 at 0.781×0.781×6.5 mm" in result.stdout
    assert_one_line_error(run("sample", sample), "exists")


def _modules_after(*args) -> set[str]:
    """The heavy modules loaded by ``medsr ARGS`` run in a fresh interpreter."""
    return _fresh_run(*args)[0]


def _fresh_run(*args) -> tuple[set[str], str]:
    """``medsr ARGS`` in a fresh interpreter: the heavy modules it loaded, and its stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from medsr.cli import app\n"
            f"sys.argv = ['medsr', *{[str(a) for a in args]!r}]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('loaded:', *(m for m in ('torch', 'monai', 'onnxruntime', 'openvino') "
            "if m in sys.modules))")
    root = str(Path(medsr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    return set(done.stdout.strip().splitlines()[-1].split()[1:]), done.stderr


def test_help_info_and_interpolation_load_no_torch_or_monai(scan, tmp_path):
    """Start-up costs nothing: a command loads only what it needs (issue #20)."""
    assert _modules_after("--help") == set()
    assert _modules_after("info", scan) == set()
    assert _modules_after("upscale", scan, "-o", tmp_path / "o.nii.gz", "--scale", 1, 1, 2,
                          "--method", "bspline") == set()
    assert (tmp_path / "o.nii.gz").exists()


def test_auto_with_nothing_to_upscale_says_so_and_loads_no_torch(tmp_path):
    """An isotropic scan and no --scale: method auto writes it unchanged with B-spline, says
    why on stderr, and loads no torch for a copy."""
    from conftest import make_affine, rotation

    path = write_phantom_nifti(tmp_path / "iso.nii.gz",
                               make_affine(rotation((1, 2, 3), 27.0), (1.5, 1.5, 1.5),
                                           (3.0, -4.0, 5.0)))
    assert _modules_after("upscale", path, "-o", tmp_path / "a.nii.gz") == set()
    result = run("upscale", path, "-o", tmp_path / "b.nii.gz")
    assert result.exit_code == 0 and "(bspline)" in result.stdout
    assert "nothing to upscale" in result.stderr and "--scale" in result.stderr
    back, source = nib.load(str(tmp_path / "b.nii.gz")), nib.load(str(path))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(source.dataobj))
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-6)
    coarser = run("upscale", path, "--spacing", 2, 2, 2, "-o", tmp_path / "c.nii.gz")
    assert coarser.exit_code == 0 and "nothing to upscale" not in coarser.stderr  # resampled
    assert nib.load(str(tmp_path / "c.nii.gz")).header.get_zooms() == pytest.approx((2, 2, 2))


def test_default_model_runs_without_monai(scan, tmp_path, monkeypatch):
    """A learned upscale loads torch and OpenVINO but not MONAI (whose ``__init__``
    imports every subpackage: seconds on each run); torch only while its graph is not cached
    (an empty cache here; see ``test_a_cached_graph_runs_without_torch``)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loaded = _modules_after("upscale", scan, "-o", tmp_path / "o.nii.gz", "--scale", 1, 1, 2)
    assert "torch" in loaded and "monai" not in loaded
    assert (tmp_path / "o.nii.gz").exists()


def test_precision_fp32_computes_in_float32(scan, tmp_path, monkeypatch, openvino_precisions):
    """``--precision fp32`` (or ``MEDSR_PRECISION``) reaches the networks; a bad value in the
    environment is one line and exit 1, the output not written."""
    from medsr import runtime

    made = openvino_precisions
    monkeypatch.setattr(runtime, "_PRECISION", [])
    out = tmp_path / "o.nii.gz"
    result = runner.invoke(app, ["upscale", str(scan), "-o", str(out), "--scale", "1", "1", "2",
                                 "--method", "default", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert made and set(made) == {"f32"} and out.exists()
    assert runtime.precision() == "fp32"  # what the CLI set, on any CPU
    monkeypatch.setattr(runtime, "_PRECISION", [])
    monkeypatch.setenv("MEDSR_PRECISION", "half")
    result = runner.invoke(app, ["upscale", str(scan), "-o", str(tmp_path / "p.nii.gz"),
                                 "--scale", "1", "1", "2", "--method", "default"])
    assert_one_line_error(result, "MEDSR_PRECISION='half' is not a precision")
    assert not (tmp_path / "p.nii.gz").exists()


def test_a_cached_graph_runs_without_torch(tmp_path, monkeypatch):
    """Once a first run has exported the default model's graph into the cache, the next
    default upscale (its noise measurement, self-check, consistency projection and
    uncertainty map included) loads neither torch nor MONAI, and writes the same outputs."""
    from conftest import make_affine

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    path = tmp_path / "ct.nii.gz"
    img = nib.Nifti1Image(np.rint(phantom((40, 36, 8)) - 1000.0).astype(np.int16),
                          make_affine(np.eye(3), (0.8, 0.8, 3.0), (0.0, 0.0, 0.0)))
    img.to_filename(str(path))

    def upscale(name, *more):
        return _fresh_run("upscale", path, "-o", tmp_path / f"{name}.nii.gz", "--scale", 1, 1, 3,
                          "--method", "default", "--modality", "ct", "--dtype", "float32",
                          "-v", *more)

    def load(name):
        return np.asarray(nib.load(str(tmp_path / f"{name}.nii.gz")).dataobj)

    first, _ = upscale("first", "--uncertainty", tmp_path / "first_sd.nii.gz")
    assert "torch" in first and len(list((cache / "medsr" / "onnx").glob("*.onnx"))) == 1
    again, log = upscale("again", "--uncertainty", tmp_path / "again_sd.nii.gz")
    assert "torch" not in again and "monai" not in again and "openvino" in again
    assert "self-check on" in log and "noise of the measured samples" in log
    plain, _ = upscale("plain")
    assert "torch" not in plain and "monai" not in plain
    reference = load("first")
    for name in ("again", "plain"):
        np.testing.assert_allclose(load(name), reference, rtol=0, atol=1e-5 * np.ptp(reference))
    sd = load("first_sd")
    np.testing.assert_allclose(load("again_sd"), sd, rtol=0, atol=1e-5 * np.ptp(reference))
    assert sd.max() > 0


def test_lazy_package_keeps_its_public_names():
    import subprocess
    import sys

    code = ("import sys, medsr; assert 'torch' not in sys.modules; "
            "from medsr import upscale, load_volume, save_volume, MedsrError, __version__; "
            "from medsr.api import upscale as api_upscale; assert upscale is api_upscale; "
            "assert set(medsr.__all__) <= set(dir(medsr))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_openmp_threads_sleep_only_on_a_busy_machine(monkeypatch):
    """Waiting OpenMP threads sleep (PASSIVE) when the load is over 1.5× the cores, and keep
    OpenMP's default (faster when idle) otherwise; a user's own setting always wins."""
    import os

    from medsr import cli

    monkeypatch.setattr(cli, "app", lambda: 0)
    cores = len(os.sched_getaffinity(0))
    for load, expected in ((10.0 * cores, "PASSIVE"), (0.1, None)):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        with pytest.raises(SystemExit):
            cli.main()
        assert os.environ.get("OMP_WAIT_POLICY") == expected
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    with pytest.raises(SystemExit):
        cli.main()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_undecodable_dicom_pixels_give_one_line_without_library_tracebacks():
    """pydicom's decoders log each failure with a traceback; a user sees one line that names
    every decoder's reason (here: 12-bit JPEG Extended, which no installed decoder reads)."""
    import logging

    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPEG-lossy.dcm")
    logging.getLogger("pydicom").disabled = True
    try:
        pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001 - whichever decoder error: the case under test
        pass
    else:
        pytest.skip("an installed decoder reads 12-bit JPEG Extended")
    finally:
        logging.getLogger("pydicom").disabled = False
    result = run("info", path)
    assert_one_line_error(result, "12-bit")
    assert not result.stderr.strip().endswith(":")  # the reasons follow, on the same line


def test_version_is_the_package_version():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"medsr {medsr.__version__}"
    from importlib.metadata import version  # the installed distribution's, from pyproject

    assert version("medsr") == medsr.__version__


@pytest.mark.parametrize("name", ["o.nii.gz", "o.nrrd", "dicom_out"])
def test_every_output_names_the_medsr_that_made_it(scan, tmp_path, name):
    out = tmp_path / name
    extra = ["--format", "dicom"] if name == "dicom_out" else []
    result = run("upscale", scan, "-o", out, "--scale", 1, 1, 2, "--method", "bspline", *extra)
    assert result.exit_code == 0, result.output
    result = run("info", out)
    assert result.exit_code == 0, result.output
    assert f"made by medsr {medsr.__version__} bspline" in result.stdout
    assert "made by" not in run("info", scan).stdout  # the input was not made by medsr
