"""Noise: the estimate on the scan, the noise-aware consistency projection, the pairs that carry
the scan's noise (training and self-supervised), and the figures users see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import phantom
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.consistency import (
    SliceProfile,
    degrade,
    degrade_axes,
    noise_variance_ratio,
    project,
    project_axes,
)
from medsr.noise import noise_gain, noise_sd, scan_noise, series_noise_sd, top_up_sd
from medsr.training.config import load_config
from medsr.training.data import PairSampler, Volume


def _smooth(shape=(64, 60, 12)) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (500 + 300 * np.exp(-(grids[0] ** 2 + grids[1] ** 2) * 3)
            + 80 * grids[2]).astype(np.float32)


def test_noise_estimate_is_right_on_noise_and_small_on_edges():
    """Known white noise is measured within 5 % on a smooth volume, and within 15-20 % with
    sharp edges and texture beside it."""
    clean = _smooth()
    noisy = clean + np.random.default_rng(0).normal(0, 12.0, clean.shape).astype(np.float32)
    assert noise_sd(noisy, 2, 100.0) == pytest.approx(12.0, rel=0.05)
    assert noise_sd(clean, 2, 100.0) < 0.5
    # the phantom: sharp edges, texture and its own noise (sd 10 inside)
    edges = phantom((128, 128, 8))
    sd = 0.03 * float(edges.max())
    noisy_edges = edges + np.random.default_rng(1).normal(0, sd, edges.shape).astype(np.float32)
    assert noise_sd(noisy_edges, 2) == pytest.approx(np.hypot(10.0, sd), rel=0.15)
    assert noise_sd(edges, 2) == pytest.approx(10.0, rel=0.2)


def test_series_noise_reads_noise_not_anatomy():
    """A series' volumes differ by their noise alone: the difference of consecutive volumes
    finds it within 5 % where the planes' estimate, on coarse anatomy, reads far more; the
    request's noise is the smaller of the two."""
    rng = np.random.default_rng(3)
    anatomy = rng.normal(500, 150, (48, 48, 10)).astype(np.float32)  # texture at the pixel
    frames = np.stack([anatomy + rng.normal(0, 6.0, anatomy.shape).astype(np.float32)
                       for _ in range(3)])
    assert series_noise_sd(frames, lo=0.0) == pytest.approx(6.0, rel=0.05)
    assert noise_sd(frames[0], 2, 0.0) > 3 * 6.0
    assert series_noise_sd(frames[:1], lo=0.0) == 0.0  # one volume: no difference

    class Request:  # a through-plane request along the last axis
        noise_sd, axis, affine = None, 2, np.diag([2.0, 2.0, 6.0, 1.0])

        def operators(self):
            return [(2, 3, SliceProfile("box", 1.0))]

    one = scan_noise(Request(), frames.mean(axis=0), lo=0.0)
    both = scan_noise(Request(), frames.mean(axis=0), lo=0.0, frames=frames)
    assert both == pytest.approx(6.0, rel=0.05) and one > 3 * both


def test_wiener_gain_and_top_up():
    assert noise_gain(100.0, 0.0) == 1.0  # no noise: exact
    assert noise_gain(100.0, 5.0) == pytest.approx(0.75)
    assert noise_gain(4.0, 5.0) == 0.0  # the residual is all noise: leave it
    # a box of 3 keeps a third of the variance: add the other two thirds
    assert top_up_sd(3.0, 1 / 3) == pytest.approx(3.0 * np.sqrt(2 / 3))


@pytest.mark.parametrize("profile", [SliceProfile("box", 1.0), SliceProfile("gaussian", 1.0),
                                     SliceProfile("box", 0.6)])
def test_noise_variance_ratio_is_what_white_noise_keeps(profile):
    noise = np.random.default_rng(2).normal(0, 1, (40, 40, 240)).astype(np.float32)
    ops = [(2, 3, profile)]
    measured = float(np.var(degrade_axes(noise, ops)))
    assert measured == pytest.approx(noise_variance_ratio((40, 40, 80), ops), rel=0.05)
    sinc = [(0, 2, SliceProfile("sinc")), (1, 2, SliceProfile("sinc"))]
    noise2 = noise[:, :, :20]
    assert float(np.var(degrade_axes(noise2, sinc))) == pytest.approx(
        noise_variance_ratio((20, 20, 20), sinc), rel=0.05)


def _mean_square(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def _noisy_case(error_sd: float, sd: float = 10.0):
    rng = np.random.default_rng(3)
    truth = np.repeat(_smooth((32, 30, 8)), 4, axis=2) + rng.normal(0, 4, (32, 30, 32)).astype(
        np.float32)
    prof = SliceProfile("box", 1.0)
    lr = degrade(truth, 2, 4, prof) + rng.normal(0, sd, (32, 30, 8)).astype(np.float32)
    guess = truth + rng.normal(0, error_sd, truth.shape).astype(np.float32)
    return truth, lr, guess, prof


def test_projection_fits_within_the_noise_instead_of_copying_it():
    """A network that removed the noise: the exact projection puts it back (worse against the
    truth); the noise-aware one leaves the output re-degrading to the input within about the
    noise, and closer to the truth."""
    truth, lr, guess, prof = _noisy_case(error_sd=1.0)
    exact = project(guess, lr, 2, 4, prof)
    gain = noise_gain(_mean_square(lr - degrade(guess, 2, 4, prof)), 10.0)
    assert gain < 0.2  # the residual is nearly all noise
    fitted = project(guess, lr, 2, 4, prof, gain=gain)
    assert np.abs(degrade(exact, 2, 4, prof) - lr).max() < 1e-2
    residual = float(np.sqrt(np.mean((degrade(fitted, 2, 4, prof) - lr) ** 2)))
    assert 0.8 * 10.0 < residual < 1.2 * 10.0

    def rmse(x):
        return float(np.sqrt(np.mean((x - truth) ** 2)))

    assert rmse(fitted) < 0.8 * rmse(exact)


def test_projection_still_corrects_errors_far_above_the_noise():
    truth, lr, guess, prof = _noisy_case(error_sd=80.0, sd=2.0)
    gain = noise_gain(_mean_square(lr - degrade(guess, 2, 4, prof)), 2.0)
    assert gain > 0.95
    fitted = project_axes(guess, lr, [(2, 4, prof)], gain=gain)
    exact = project_axes(guess, lr, [(2, 4, prof)])
    assert np.allclose(fitted, exact, atol=0.05 * 80.0)
    assert np.sqrt(np.mean((fitted - truth) ** 2)) < np.sqrt(np.mean((guess - truth) ** 2))


def test_training_noise_probability_leaves_that_share_clean():
    cfg = load_config("configs/default_mr_robust.yaml",
                      {"patch.min_foreground": 0.0, "patch.batch_size": 1,
                       "network.init": None, "degradation.factor": [3, 3],
                       "degradation.thickness": [1.0, 1.0], "degradation.profiles": ["box"]})
    data = torch.from_numpy(phantom((40, 40, 40)) / 1200.0)
    sampler = PairSampler([Volume("p", data, (0, 1, 2))], cfg)
    clean = 0
    for step in range(60):
        lr, hr = sampler.batch(step)
        box = hr.reshape(*hr.shape[:-1], hr.shape[-1] // 3, 3).mean(-1)
        clean += bool(torch.allclose(lr, box, atol=1e-5))
    assert 0.25 < clean / 60 < 0.55  # 40 % clean
    with pytest.raises(medsr.MedsrError, match="noise_probability"):
        load_config("configs/default_mr_robust.yaml", {"degradation.noise_probability": 1.5})


def _noisy_thick(sd: float):
    from monai.data import MetaTensor

    rng = np.random.default_rng(4)
    vol = phantom((96, 96, 30)).astype(np.float32)  # its own noise: sd 10 / √3 once averaged
    thick = vol.reshape(96, 96, 10, 3).mean(-1) + rng.normal(0, sd, (96, 96, 10)).astype(
        np.float32)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    return MetaTensor(torch.from_numpy(thick)[None], affine=torch.as_tensor(aff))


def test_upscale_measures_the_noise_and_reports_the_residual_against_it():
    low = _noisy_thick(sd=30.0)
    out = medsr.upscale(low, (1, 1, 3), method="default", modality="MR")
    assert out.meta["medsr_noise_sd"] == pytest.approx(np.hypot(30.0, 10 / np.sqrt(3)), rel=0.2)
    ratio = out.meta["medsr_consistency_residual_sd"] / out.meta["medsr_noise_sd"]
    assert 0.0 < ratio < 1.5
    assert 0.0 <= out.meta["medsr_consistency_gain"] < 1.0  # one gain for the whole run
    exact = medsr.upscale(low, (1, 1, 3), method="default", modality="MR", noise_sd=0)
    assert exact.meta["medsr_noise_sd"] == 0
    assert exact.meta["medsr_consistency_residual_sd"] < 1e-3
    with pytest.raises(medsr.MedsrError, match="noise sd"):
        medsr.upscale(low, (1, 1, 3), method="default", noise_sd=-1)


def test_cli_names_the_noise_and_refuses_a_negative_sd(tmp_path):
    src = tmp_path / "noisy.nii.gz"
    medsr.save_volume(_noisy_thick(sd=30.0), src)
    result = CliRunner().invoke(app, ["upscale", str(src), "--scale", "1", "1", "3",
                                      "--method", "default", "-o", str(tmp_path / "o.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "× the noise sd" in result.output
    bad = CliRunner().invoke(app, ["upscale", str(src), "--scale", "1", "1", "3",
                                   "--method", "default", "--noise-sd", "-2",
                                   "-o", str(tmp_path / "p.nii.gz")])
    assert bad.exit_code != 0 and "noise sd" in bad.output
    assert "Traceback" not in bad.output


def test_self_supervised_pairs_carry_the_scan_noise():
    from medsr.selfsup import fit_self_supervised

    low = _noisy_thick(sd=30.0)
    array = np.asarray(low[0])
    _, card = fit_self_supervised(array, np.asarray(low.affine), axis=2, factor=3,
                                  modality="MR", steps=2, noise_sd=30.0, device="cpu")
    # a box of 3 keeps a third of the in-plane noise; the pairs get the other two thirds
    assert card["self_supervised"]["pair_noise_sd"] == pytest.approx(30 * np.sqrt(2 / 3),
                                                                     rel=1e-3)
    out = medsr.upscale(low, (1, 1, 3), method="self-supervised", modality="MR",
                        self_supervised={"steps": 2}, device="cpu")
    assert out.meta["medsr_self_supervised"]["pair_noise_sd"] > 0  # measured on the scan
    _, clean = fit_self_supervised(array, np.asarray(low.affine), axis=2, factor=3,
                                   modality="MR", steps=2, device="cpu")
    assert clean["self_supervised"]["pair_noise_sd"] == 0
