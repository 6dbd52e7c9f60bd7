"""medsr.evaluation (evaluate, benchmark) and the ``medsr evaluate`` / ``benchmark`` commands."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINES, phantom
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.errors import MedsrError
from medsr.evaluation import benchmark, evaluate
from medsr.io import SourceInfo, make_volume
from medsr.transforms.degrade import simulate_thick_slices

runner = CliRunner()
CT_RANGE = (-1024.0, 3071.0)


def volume(array, affine=AFFINES["oblique"], modality="CT"):
    return make_volume(np.asarray(array, np.float32), affine,
                       SourceInfo("array", "", "float32", modality))


def ct_phantom(shape=(26, 24, 18)):
    return phantom(shape) - 1000.0  # air -1000 HU, tissue above


def save_nifti(array, affine, path):
    nib.Nifti1Image(np.asarray(array, np.float32), affine).to_filename(str(path))
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, text):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.stderr


@pytest.fixture(scope="module")
def upscaled():
    """A CT truth and the bspline upscaling of its slab-averaged ×3 copy along axis 2."""
    truth = volume(ct_phantom())
    low = simulate_thick_slices(truth, 2, 3)
    return medsr.upscale(low, (1, 1, 3)), truth


def test_evaluate_agrees_with_scikit_image_along_the_upscaled_axis(upscaled):
    pred, truth = upscaled
    res = evaluate(pred, truth)
    assert res.axis == 2 and "upscaled" in res.axis_reason
    assert res.data_range == CT_RANGE and res.modality == "CT" and res.unit == "HU"
    p = np.clip(pred[0].numpy(), *CT_RANGE)
    g = np.clip(truth[0].numpy(), *CT_RANGE)
    for i in range(g.shape[2]):
        assert res.slice_psnr[i] == pytest.approx(
            peak_signal_noise_ratio(g[..., i], p[..., i], data_range=4095), abs=1e-6)
        assert res.slice_ssim[i] == pytest.approx(structural_similarity(
            g[..., i], p[..., i], gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=4095), abs=1e-4)
    assert res.psnr == pytest.approx(peak_signal_noise_ratio(g, p, data_range=4095), abs=1e-6)
    assert res.psnr_slice_mean == pytest.approx(np.mean(res.slice_psnr))
    assert res.ssim == pytest.approx(np.mean(res.slice_ssim))
    assert "CT > -500 HU" in res.mask_source and 0.1 < res.mask_fraction < 0.6
    mask = g > -500
    given = evaluate(pred, truth, mask=mask)
    assert given.mae == pytest.approx(np.abs(p - g)[mask].mean(), rel=1e-6)


def test_json_and_csv_outputs(upscaled, tmp_path):
    pred, truth = upscaled
    res = evaluate(pred, truth, axis=1, data_range=(-1000, 1000))
    summary = json.loads(res.to_json())
    for key in ("psnr", "psnr_slice_mean", "ssim", "mae", "axis", "range", "n_slices"):
        assert key in summary
    assert summary["axis"] == 1 and summary["range"] == [-1000, 1000]
    assert summary["n_slices"] == pred.shape[2] == 24
    with open(res.write_csv(tmp_path / "s.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and float(rows[3]["psnr"]) == pytest.approx(res.slice_psnr[3])


def test_constant_truth_slices_are_reported_but_left_out_of_the_means():
    gt = ct_phantom((20, 22, 9))
    gt[:, :, 0] = gt[:, :, -1] = -1000.0
    pred = gt + np.random.default_rng(0).normal(0, 20, gt.shape)
    res = evaluate(volume(pred), volume(gt), axis=2)
    assert res.excluded == [0, 8] and len(res.slice_psnr) == 9
    assert res.psnr_slice_mean == pytest.approx(np.mean(res.slice_psnr[1:8]))
    assert res.ssim == pytest.approx(np.mean(res.slice_ssim[1:8]))
    assert "excluded" in res.report()


def test_grids_must_match_within_a_micron():
    gt = ct_phantom((20, 22, 12))
    near, far = AFFINES["oblique"].copy(), AFFINES["oblique"].copy()
    near[0, 3] += 5e-4
    far[0, 3] += 2e-3
    assert evaluate(volume(gt, near), volume(gt)).psnr == float("inf")
    with pytest.raises(MedsrError, match="not on the same grid.*--resample-gt"):
        evaluate(volume(gt, far), volume(gt))
    with pytest.raises(MedsrError, match="shapes"):
        evaluate(volume(gt[:, :, :10]), volume(gt))


@pytest.mark.parametrize("method", [True, "bspline"])
def test_resample_gt_onto_the_prediction_grid(method):
    """A field linear in world coordinates survives resampling (linear or cubic) exactly."""
    affine, shape = AFFINES["oblique"], (16, 14, 8)

    def field(aff, shp):
        idx = np.indices(shp).reshape(3, -1)
        w = (aff @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
        return (2 * w[0] - w[1] + 0.5 * w[2]).reshape(shp)

    gt = volume(field(affine, shape), affine, "MR")
    pred = medsr.upscale(gt, (1, 1, 2), method="linear")
    with pytest.raises(MedsrError):
        evaluate(pred, gt)
    pred_exact = volume(field(pred.affine.numpy(), pred.shape[1:]), pred.affine.numpy())
    res = evaluate(pred_exact, gt, resample_gt=method, data_range=(-500, 500))
    assert "GT resampled onto PRED's grid" in res.notes[0]
    # interior slices: linear is exact to float32; the cubic B-spline's mirror boundary
    # disturbs a ramp near the ends (68 dB two slices in, over 100 dB further in)
    assert min(res.slice_psnr[2:-2]) > 60


def test_axis_rules_and_ranges(tmp_path, upscaled):
    gt = phantom((20, 22, 12))
    path = save_nifti(gt, AFFINES["anisotropic"], tmp_path / "gt.nii.gz")
    res = evaluate(path, path)  # from disk: no upscaling record -> the last axis
    assert res.axis == 2 and "last" in res.axis_reason
    assert res.modality is None and res.data_range == (float(gt.min()), float(gt.max()))
    assert res.excluded == list(range(12))  # identical: every PSNR is infinite
    assert json.loads(res.to_json())["psnr"] is None
    mr = evaluate(volume(gt, modality="MR"), volume(gt, modality="MR"), axis=0)
    assert mr.axis == 0 and mr.data_range == (0.0, pytest.approx(np.percentile(gt, 99.5)))
    with pytest.raises(MedsrError, match="--axis"):
        evaluate(path, path, axis=3)


def test_cli_evaluate_json_csv_and_errors(tmp_path):
    gt = phantom((20, 22, 10))
    pred = gt + np.random.default_rng(2).normal(0, 15, gt.shape)
    g = save_nifti(gt, AFFINES["flipped"], tmp_path / "gt.nii.gz")
    p = save_nifti(pred, AFFINES["flipped"], tmp_path / "pred.nii.gz")
    result = run("evaluate", p, g, "--json", "--csv", tmp_path / "slices.csv", "--range", 0, 1000)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["axis"] == 2 and summary["range"] == [0, 1000] and summary["n_slices"] == 10
    assert summary["psnr"] > 20 and 0 < summary["ssim"] < 1 and summary["mae"] > 0
    assert "axis 2:" in result.stdout and "range [0, 1000] (given)" in result.stdout
    with open(tmp_path / "slices.csv") as f:
        assert len(list(csv.DictReader(f))) == 10
    shifted = save_nifti(pred, AFFINES["anisotropic"], tmp_path / "other.nii.gz")
    assert_one_line_error(run("evaluate", shifted, g), "--resample-gt")
    assert_one_line_error(run("evaluate", p, tmp_path / "missing.nii.gz"), "no such file")
    assert_one_line_error(run("evaluate", p, g, "--axis", 0), "at least 11")


def test_benchmark_writes_tables_and_figures(tmp_path):
    hr = volume(ct_phantom((24, 22, 14)), AFFINES["anisotropic"])
    res = benchmark(hr, 3, axis=2, out_dir=tmp_path / "bm")
    assert res.shape == (24, 22, 12) and res.cropped == 2
    assert list(res.results) == ["linear", "bspline"]
    assert all(r.n_slices == 12 and r.psnr > 20 for r in res.results.values())
    assert "| linear |" in res.table() and "| bspline |" in res.table()
    with open(res.files["per_slice_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {r["method"] for r in rows} == {"linear", "bspline"}
    assert [int(r["slice"]) for r in rows[:12]] == list(range(12))
    assert set(rows[0]) >= {"method", "slice", "psnr", "ssim"}
    with open(res.files["summary_csv"]) as f:
        summary = list(csv.DictReader(f))
    assert [r["method"] for r in summary] == ["linear", "bspline"]
    assert float(summary[1]["psnr"]) == pytest.approx(res.results["bspline"].psnr, abs=1e-5)
    for key in ("curves", "slices"):
        assert res.files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(res.files[key])
        assert image.ndim == 3 and min(image.shape[:2]) > 100
    with pytest.raises(MedsrError, match="--force"):
        benchmark(hr, 3, axis=2, out_dir=tmp_path / "bm")
    with pytest.raises(MedsrError, match="unknown method 'cubic'"):
        benchmark(hr, 3, axis=2, methods=["cubic"])
    with pytest.raises(MedsrError, match="too few"):
        benchmark(hr, 8, axis=2)


def test_box_benchmark_reproduces_a_field_linear_along_the_axis():
    """Slab averages of a linear ramp upscaled linearly land exactly on the truth inside."""
    ramp = np.broadcast_to(np.arange(15, dtype=np.float32) * 10.0, (20, 18, 15))
    ramp = ramp + phantom((20, 18, 1))  # in-plane structure, linear along axis 2
    res = benchmark(volume(ramp, AFFINES["oblique_flipped"], "MR"), 3, axis=2,
                    methods=("linear",))
    assert min(res.results["linear"].slice_psnr[1:-1]) > 80


def test_cli_benchmark_default_folder_and_errors(tmp_path):
    scan = save_nifti(ct_phantom((22, 20, 12)), AFFINES["anisotropic"], tmp_path / "hr.nii.gz")
    result = run("benchmark", scan, "--factor", 2, "--methods", "linear",
                 "--profile", "gaussian")
    assert result.exit_code == 0, result.output
    out = tmp_path / "hr_benchmark"
    assert "| linear |" in result.stdout and str(out / "slices.png") in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "per_slice.csv",
                                                    "slices.png", "summary.csv"]
    assert_one_line_error(run("benchmark", scan, "--factor", 2), "--force")
    assert_one_line_error(run("benchmark", scan, "--factor", 2, "--force",
                              "--methods", "linear,nope"), "unknown method 'nope'")
    assert_one_line_error(run("benchmark", scan, "--factor", 1, "--out", tmp_path / "o"),
                          "--factor")
