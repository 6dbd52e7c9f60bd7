"""Never worse than interpolation, per scan: the self-check on the scan's own in-plane truth,
recorded in the output, and B-spline instead of a network that loses it under --method auto."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from test_upscaling import _thick
from typer.testing import CliRunner

import medsr
import medsr.models
from medsr.checkpoint import load_model, save_model
from medsr.cli import app
from medsr.methods import _cached_model


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory):
    """The default MR model with its weights scrambled: a network that loses to B-spline."""
    net, card = load_model(medsr.models.default_model("MR"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    folder = tmp_path_factory.mktemp("bad_model")
    save_model(net, folder, card)
    return folder


@pytest.fixture
def bad_default(bad_model, monkeypatch):
    """Make the scrambled model the shipped default for MR."""
    real = medsr.models.default_model
    monkeypatch.setattr(medsr.models, "default_model",
                        lambda modality, kind="through", pixel_mm=None: bad_model
                        if modality.upper() == "MR" and kind == "through"
                        else real(modality, kind, pixel_mm))
    yield bad_model
    _cached_model.cache_clear()


def test_a_good_model_passes_and_the_check_is_recorded(tmp_path):
    out = medsr.upscale(_thick(), (1, 1, 3))  # auto, no uncertainty map asked
    check = out.meta["medsr_selfcheck"]
    assert out.meta["medsr_method"] == "default" and check["method"] == "default"
    assert check["passed"] and check["learned_psnr"] > check["bspline_psnr"] > 0
    assert check["planes"] >= 4
    path = medsr.save_volume(out, tmp_path / "o.nii.gz")
    comments = [e.get_content() for e in nib.load(str(path)).header.extensions
                if e.get_code() == 6]
    assert f"default in-plane check {check['learned_psnr']:.1f} dB".encode() in comments[0]


def test_auto_falls_back_to_bspline_when_the_network_loses(bad_default, caplog):
    vol = _thick()
    with caplog.at_level(logging.WARNING, logger="medsr"):
        out = medsr.upscale(vol, (1, 1, 3))
    check = out.meta["medsr_selfcheck"]
    assert out.meta["medsr_method"] == "bspline" and check["method"] == "default"
    assert not check["passed"] and check["learned_psnr"] < check["bspline_psnr"]
    assert "medsr_consistency_psnr" not in out.meta
    np.testing.assert_array_equal(out.numpy(),
                                  medsr.upscale(vol, (1, 1, 3), method="bspline").numpy())
    np.testing.assert_array_equal(out.affine.numpy(),
                                  medsr.upscale(vol, (1, 1, 3), method="bspline").affine.numpy())
    lines = [r.getMessage() for r in caplog.records if "using B-spline" in r.getMessage()]
    assert len(lines) == 1 and "default" in lines[0] and "B-spline" in lines[0]


@pytest.mark.parametrize("request_kw", [{"method": "default"}, {"uncertainty": True}])
def test_an_explicit_request_keeps_the_network_but_warns(bad_default, caplog, request_kw):
    with caplog.at_level(logging.WARNING, logger="medsr"):
        out = medsr.upscale(_thick(), (1, 1, 3), **request_kw)
    out = out[0] if isinstance(out, tuple) else out
    assert out.meta["medsr_method"] == "default"
    assert not out.meta["medsr_selfcheck"]["passed"]
    assert any("kept as asked" in r.getMessage() for r in caplog.records)


def test_cli_says_why_it_fell_back(bad_default, tmp_path):
    path = tmp_path / "thick.nii.gz"
    medsr.save_volume(_thick(), path)
    result = CliRunner().invoke(app, ["upscale", str(path), "--scale", "1", "1", "3", "-o",
                                      str(tmp_path / "o.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "(bspline)" in result.output
    why = [line for line in result.output.splitlines() if "using B-spline" in line]
    assert len(why) == 1 and "self-check" in why[0]


def test_interpolation_runs_no_self_check():
    out = medsr.upscale(_thick(), (1, 1, 3), method="bspline")
    assert "medsr_selfcheck" not in out.meta
