"""Self-supervised SR and the shipped default models through `upscale`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINES, make_affine, phantom
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.errors import MedsrError
from medsr.io import SourceInfo, make_volume
from medsr.models import default_model

MODELS = Path(medsr.__file__).parent / "models"


@pytest.fixture
def thick():
    """Thick-slice phantom: 1 mm in-plane, 3 mm slices (oblique)."""
    affine = make_affine(AFFINES["oblique"][:3, :3] / np.linalg.norm(
        AFFINES["oblique"][:3, :3], axis=0), (1.0, 1.0, 3.0), (5.0, -3.0, 8.0))
    return make_volume(phantom((40, 36, 8), seed=4), affine, SourceInfo("nifti", "", "int16"))


def test_self_supervised_lands_on_the_upscaled_grid_and_is_seeded(thick, tmp_path):
    opts = {"steps": 4, "seed": 1, "init": None, "save_model": tmp_path / "fitted"}
    out = medsr.upscale(thick, method="self-supervised", self_supervised=opts)
    ref = medsr.upscale(thick, method="bspline")
    assert out.shape == ref.shape == (1, 40, 36, 24)
    np.testing.assert_allclose(out.affine.numpy(), ref.affine.numpy(), atol=1e-12)
    assert out.meta["medsr_method"] == "self-supervised"
    # its self-check scores the slices it held out of training (one plane per view each),
    # not the ones it learned from
    held = out.meta["medsr_self_supervised"]["held_out_slices"]
    assert 1 <= len(held) < 8 and out.meta["medsr_selfcheck"]["planes"] == 2 * len(held)
    again = medsr.upscale(thick, method="self-supervised", self_supervised={**opts,
                          "save_model": None})
    np.testing.assert_array_equal(out.numpy(), again.numpy())
    other = medsr.upscale(thick, method="self-supervised", self_supervised={**opts, "seed": 2,
                          "save_model": None})
    assert not np.array_equal(out.numpy(), other.numpy())
    card = json.loads((tmp_path / "fitted" / "card.json").read_text())
    assert card["self_supervised"]["steps"] == 4 and card["factors"] == [3, 3]
    reused = medsr.upscale(thick, model=tmp_path / "fitted")
    np.testing.assert_allclose(reused.numpy(), out.numpy(), atol=1e-4)


def test_self_supervised_needs_one_thick_axis(thick):
    with pytest.raises(MedsrError, match="one"):
        medsr.upscale(thick, (2, 1, 3), method="self-supervised",
                      self_supervised={"steps": 1, "init": None})


def test_self_supervised_needs_a_fine_plane_and_says_which_spacings_it_saw():
    """A scan thick along two axes (a few far-apart EPI slices made thick in-plane) has no
    plane to learn from: one line names the other axes' spacings."""
    affine = make_affine(np.eye(3), (3.0, 1.0, 7.5), (0.0, 0.0, 0.0))
    few = make_volume(phantom((12, 36, 6), seed=2), affine, SourceInfo("nifti", "", "int16"))
    with pytest.raises(MedsrError, match="spacings of 1 and 7.5 mm"):
        medsr.upscale(few, (3, 1, 1), method="self-supervised",
                      self_supervised={"steps": 1, "init": None})


def test_cli_self_supervised_with_budget(thick, tmp_path):
    path = tmp_path / "thick.nii.gz"
    medsr.save_volume(thick, path)
    result = CliRunner().invoke(app, ["upscale", str(path), "--self-supervised",
                                      "--budget-seconds", "2", "-o", str(tmp_path / "o.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "(self-supervised; slice profile box 1.00× spacing; re-degraded" in result.stdout
    assert nib.load(str(tmp_path / "o.nii.gz")).shape == (40, 36, 24)
    # MR keeps a quarter of the starting model's weights, and says so
    result = CliRunner().invoke(app, ["upscale", str(path), "--self-supervised", "--modality",
                                      "mr", "--steps", "2", "-o", str(tmp_path / "mr.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "(weights 0.75 fitted, the rest the starting model's)" in result.stdout


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_default_models_are_shipped_with_cards(modality):
    folder = default_model(modality)
    assert folder is not None, f"no default {modality} model in the package"
    card = json.loads((folder / "card.json").read_text())
    assert card["modality"] == modality and card["training_data"]
    assert card["factors"][0] <= 2 and card["factors"][1] >= 8
    assert card["input"] == "lr" and card["network"]["name"] == "lrrefiner"  # v0.2 models
    assert (folder / "metrics.jsonl").is_file()  # the training log ships beside the weights
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 25e6


@pytest.mark.parametrize("folder", sorted(p.parent for p in MODELS.glob("*/card.json")),
                         ids=lambda p: p.name)
def test_every_shipped_card_names_what_its_model_learned_from(folder):
    """Each training volume with its source and licence (issue #31), no volume twice, and
    weights that are the card's network (loaded strictly)."""
    from medsr.checkpoint import load_model

    card = json.loads((folder / "card.json").read_text())
    files = [entry["file"] for entry in card["training_data"]]
    assert files and len(set(files)) == len(files), folder.name
    for entry in card["training_data"]:
        assert re.search(r"BSD|MIT|Apache|PDDL|CC0|MNI", entry["source"]), entry
    net, _ = load_model(folder)
    assert net.config["num_blocks"] == card["network"]["num_blocks"]


def test_auto_uses_the_default_model_and_falls_back_to_bspline(thick):
    out = medsr.upscale(thick)  # 3 mm / 1 mm: ×3, in the default model's range
    assert out.meta["medsr_method"] == "default" and out.shape == (1, 40, 36, 24)
    exact = medsr.upscale(thick, spacing=(1, 1, 1))  # a spacing: learned ×3, met exactly
    assert exact.meta["medsr_method"] == "default" and exact.shape == (1, 40, 36, 24)
    assert medsr.upscale(thick, (1, 1, 12)).meta["medsr_method"] == "bspline"
    with pytest.raises(MedsrError, match="factors"):
        medsr.upscale(thick, (1, 1, 12), method="default")
    ct = make_volume(phantom((40, 36, 8)) * 2 - 1024, thick.affine.numpy(),
                     SourceInfo("nifti", "", "int16"))
    assert medsr.upscale(ct, modality="CT").meta["medsr_method"] == "default"


def test_self_supervised_reports_its_work_in_the_metadata(thick, tmp_path):
    out = medsr.upscale(thick, method="self-supervised",
                        self_supervised={"steps": 3, "seed": 0, "init": None})
    fitted = out.meta["medsr_self_supervised"]
    assert fitted["steps"] == 3 and fitted["stopped"] == "steps"
    assert fitted["held_out_gain_db"] == pytest.approx(
        fitted["held_out_psnr"] - fitted["held_out_psnr_bspline"], abs=2e-3)
    medsr.save_volume(out, tmp_path / "o.nii.gz")  # the writers store it with the method
    assert b"3 steps, held-out" in bytes(nib.load(str(tmp_path / "o.nii.gz")).header["descrip"])


def test_stopping_rule_halves_then_stops_and_keeps_the_best_weights():
    import torch

    from medsr.selfsup import PATIENCE, StoppingRule

    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    rule = StoppingRule(net)
    assert rule.update(0, 30.0, optimizer) == ""
    with torch.no_grad():
        net.weight.fill_(7.0)
    assert rule.update(50, 31.0, optimizer) == ""  # the best: these weights are kept
    with torch.no_grad():
        net.weight.fill_(-1.0)
    verdicts = [rule.update(100 + 50 * i, 30.5, optimizer) for i in range(2 * PATIENCE)]
    assert verdicts[PATIENCE - 1] == "learning rate halved"
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert verdicts[-1] == "plateau" and verdicts.count("plateau") == 1
    rule.restore(net)
    assert float(net.weight) == 7.0 and rule.best_step == 50


def test_held_out_slices_stay_inside_the_scan():
    from medsr.selfsup import held_out_slices

    for n in (3, 8, 25, 36, 120):
        held = held_out_slices(n)
        assert 1 <= len(held) <= 4 and held.min() >= 1 and held.max() <= n - 2


def test_self_supervised_pairs_stay_inside_a_thin_scan():
    """A series with 24 slices (an EPI whose in-plane axis is upscaled): the training pairs
    are cut from the scan, never padded past it, and whole LR voxels long; a scan with large
    planes keeps the 64-pixel patches its figures were measured with."""
    import torch

    from medsr.selfsup import inplane_truth, pair_patch
    from medsr.training.config import DegradationConfig, PatchConfig, TrainConfig
    from medsr.training.data import PairSampler, Volume

    rng = np.random.default_rng(0)
    array = (1.0 + rng.random((20, 96, 24))).astype(np.float32)  # > 0 everywhere
    affine = make_affine(np.eye(3), (6.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    views = inplane_truth(array, affine, 0, 3)
    size = pair_patch(views, 3)
    assert size[0] <= 24 and size[1] <= 24 and size[1] % 3 == 0
    cfg = TrainConfig(patch=PatchConfig(size=size, batch_size=8, min_foreground=0.0),
                      degradation=DegradationConfig(factor=3, noise=[0.0, 0.0]))
    sampler = PairSampler([Volume("thin", torch.from_numpy(v), tuple(p), lr_axes=(a,))
                           for a, p, v in views], cfg)
    for step in range(4):
        lr, hr = sampler.batch(step)
        assert float(hr.min()) > 0.5 and float(lr.min()) > 0.5  # no zero padding learnt
    big = inplane_truth(np.ones((12, 128, 128), np.float32),
                        make_affine(np.eye(3), (3.0, 1.0, 1.0), (0.0, 0.0, 0.0)), 0, 3)
    assert pair_patch(big, 3) == [64, 63]


def test_fitted_weights_are_averaged_with_the_starting_model(thick):
    """``weight_average`` α returns α·fitted + (1-α)·initial (WiSE-FT); α=1 the fitted weights,
    and the held-out figures describe the network returned."""
    import torch

    from medsr.checkpoint import load_model
    from medsr.io import volume_parts
    from medsr.selfsup import fit_self_supervised

    array, affine, _ = volume_parts(thick)
    kwargs = dict(axis=2, factor=3, modality="MR", steps=3, seed=2)
    fitted, card1 = fit_self_supervised(array, affine, weight_average=1.0, **kwargs)
    half, card = fit_self_supervised(array, affine, weight_average=0.5, **kwargs)
    initial = load_model(default_model("MR"), "cpu")[0].state_dict()
    moved = 0
    for name, value in half.state_dict().items():
        expected = (fitted.state_dict()[name] + initial[name]) / 2
        assert torch.allclose(value, expected, atol=1e-6), name
        moved += not torch.equal(fitted.state_dict()[name], initial[name])
    assert moved > 0  # the fit changed the weights, so the average is neither of them
    report = card["self_supervised"]
    assert report["weight_average"] == 0.5 and card1["self_supervised"]["weight_average"] == 1.0
    assert report["held_out_psnr_fitted"] == pytest.approx(
        card1["self_supervised"]["held_out_psnr"], abs=1e-3)
    with pytest.raises(MedsrError, match="weight_average"):
        fit_self_supervised(array, affine, weight_average=1.5, **kwargs)


def test_a_cards_own_share_outside_0_1_is_refused(thick, tmp_path):
    """A starting model whose card gives ``selfsup_weight_average`` outside [0, 1] is refused
    in one line (the share must be a weight of a mean)."""
    import shutil

    from medsr.io import volume_parts
    from medsr.selfsup import fit_self_supervised

    shutil.copytree(default_model("MR"), tmp_path / "start")
    card = json.loads((tmp_path / "start" / "card.json").read_text())
    card["selfsup_weight_average"] = 1.5
    (tmp_path / "start" / "card.json").write_text(json.dumps(card))
    array, affine, _ = volume_parts(thick)
    with pytest.raises(MedsrError, match="selfsup_weight_average must be between 0 and 1"):
        fit_self_supervised(array, affine, axis=2, factor=3, modality="MR", steps=1,
                            init=tmp_path / "start")


def test_cpu_steps_take_bfloat16_only_when_asked():
    """``Stepper(cpu_bf16=True)`` trains in bf16 autocast on a CPU; the LRRefiner's B-spline
    skip stays float32 inside it (bf16 would round the image itself)."""
    import torch

    from medsr.nets import build_network
    from medsr.nets.lrsr import LRRefiner
    from medsr.training.loop import Stepper

    torch.manual_seed(0)
    net = build_network("lrrefiner", spatial_dims=2, scale=(1, 3), factors=(2, 4), features=8,
                        num_blocks=1)
    seen = []
    net.conv_first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    lr, hr = torch.rand(2, 1, 16, 6), torch.rand(2, 1, 16, 18)
    for cpu_bf16, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        loss = Stepper(net, torch.optim.AdamW(net.parameters()), None, torch.device("cpu"),
                       cpu_bf16=cpu_bf16).step(lr, hr)
        assert seen[-1] == dtype and torch.isfinite(loss)
    x = torch.rand(2, 1, 16, 6) * 1000.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        skip = net(x, 3) - net.residual(x, 3).float()
    exact = LRRefiner.skip(net, x, 3)
    assert float((skip - exact).abs().max()) < 1e-3 * 1000.0 / 256  # under bf16's rounding


def test_self_supervised_steps_in_bf16_where_the_cpu_has_it(thick, monkeypatch):
    from medsr import runtime
    from medsr.training import loop

    made = []
    real = loop.Stepper

    def spy(*args, **kwargs):
        made.append(kwargs.get("cpu_bf16", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "Stepper", spy)
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    opts = {"steps": 1, "seed": 1, "init": None}
    medsr.upscale(thick, method="self-supervised", self_supervised=opts, device="cpu")
    monkeypatch.setenv("MEDSR_PRECISION", "fp32")
    medsr.upscale(thick, method="self-supervised", self_supervised=opts, device="cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    monkeypatch.delenv("MEDSR_PRECISION")
    medsr.upscale(thick, method="self-supervised", self_supervised=opts, device="cpu")
    assert made == [True, False, False]


def test_coarse_mr_planes_get_the_coarse_model(tmp_path):
    """A through-plane MR request whose planes have 1.5 mm pixels or more (EPI) runs the
    coarse MR model, and self-supervised SR starts from it and keeps the share of its fit that
    the model's card gives; a finer one, CT and in-plane requests keep their defaults; the
    output names the model that ran."""
    from medsr.models import COARSE_PIXEL_MM, default_model

    coarse = default_model("MR", pixel_mm=COARSE_PIXEL_MM)
    assert coarse is not None and coarse.name == "default_mr_coarse"
    assert default_model("MR", pixel_mm=1.0).name == "default_mr"
    assert default_model("MR").name == "default_mr"
    assert default_model("CT", pixel_mm=3.0).name == "default_ct"
    assert default_model("MR", "inplane", pixel_mm=3.0).name == "default_mr_inplane"
    card = json.loads((coarse / "card.json").read_text())
    assert card["route"]["min_pixel_mm"] == COARSE_PIXEL_MM and len(card["training_data"]) > 30
    ran = {}
    for pixel in (1.0, 2.0):
        vol = make_volume(phantom((40, 36, 8), seed=2) * 100.0,
                          make_affine(np.eye(3), (pixel, pixel, 3 * pixel), (0.0, 0.0, 0.0)),
                          SourceInfo("nifti", "", "int16"))
        out = medsr.upscale(vol, [1, 1, 3], method="default", modality="MR")
        ran[pixel] = out.meta["medsr_model"]["name"]
        medsr.upscale(vol, [1, 1, 3], method="self-supervised", modality="MR",
                      self_supervised={"steps": 1, "save_model": tmp_path / str(pixel)})
        fitted = json.loads((tmp_path / str(pixel) / "card.json").read_text())
        ran[pixel] += " / " + Path(fitted["self_supervised"]["initial_model"]).name
        ran[pixel] += f" / {fitted['self_supervised']['weight_average']}"
    # self-supervised SR starts from the model the default route runs, and keeps the share of
    # its fit that the starting model's card asks for (else the modality's)
    from medsr.selfsup import WEIGHT_AVERAGE

    share = card["selfsup_weight_average"]
    assert share != WEIGHT_AVERAGE["MR"]
    assert ran == {1.0: f"default_mr / default_mr / {WEIGHT_AVERAGE['MR']}",
                   2.0: f"default_mr_coarse / default_mr_coarse / {share}"}


def test_model_takes_a_shipped_models_name(thick, tmp_path):
    """``model="default_mr"`` (``--model default_mr``) runs the shipped folder of that name;
    an unknown name is a one-line error."""
    out = medsr.upscale(thick, [1, 1, 3], model="default_mr")
    assert out.meta["medsr_model"]["name"] == "default_mr"
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "none.nii.gz"), "--model",
                                      "no_such_model"])
    assert result.exit_code != 0
    with pytest.raises(MedsrError, match="no model weights at .*no_such_model"):
        medsr.upscale(thick, [1, 1, 3], model="no_such_model")
