"""Training: loss falls, exact resume, DDP on CPU, configs, and trained models in `upscale`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import AFFINES, phantom
from safetensors.torch import load_file
from typer.testing import CliRunner

import medsr
from medsr.checkpoint import load_model
from medsr.cli import app
from medsr.errors import MedsrError
from medsr.training.config import load_config
from medsr.training.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("volumes")
    for i in range(3):
        vol = phantom((40, 40, 32), seed=i) * 2.0
        nib.Nifti1Image(vol, np.eye(4)).to_filename(str(folder / f"v{i}.nii.gz"))
    return folder


def tiny_config(tmp_path, data_dir, dims=2, **optim):
    cfg = {
        "name": "tiny", "seed": 3,
        "data": {"train": [str(data_dir)], "val_fraction": 0.34, "modality": "MR"},
        "patch": {"size": [16] * (dims - 1) + [16], "batch_size": 4, "val_patches": 8},
        "degradation": {"factor": 2, "noise": [0.0, 0.0]},
        "network": {"name": "edsr", "spatial_dims": dims,
                    "params": {"features": 8, "num_blocks": 1}},
        "optim": {"lr": 0.003, "max_steps": 12, "warmup_steps": 2, "val_every": 6,
                  "checkpoint_every": 6, **optim},
    }
    path = tmp_path / f"tiny{dims}d.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_loss_falls_on_a_synthetic_volume(tmp_path, data_dir):
    cfg = load_config(tiny_config(tmp_path, data_dir), {"optim.max_steps": 60,
                                                        "optim.val_every": 30})
    result = train(cfg, tmp_path / "run", device="cpu", progress=False)
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["validation"]["psnr"] == pytest.approx(result.best_psnr)
    assert card["validation"]["interpolation_psnr"] > 0 and 0 < card["validation"]["ssim"] <= 1
    assert card["training_data"] and card["validation_data"]
    assert not set(card["training_data"]) & set(card["validation_data"])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path, data_dir, ema):
    cfg = load_config(tiny_config(tmp_path, data_dir), {"optim.ema": ema})
    train(cfg, tmp_path / "full", device="cpu", progress=False)
    train(cfg, tmp_path / "cut", device="cpu", progress=False, stop_after=6)  # "killed"
    with pytest.raises(MedsrError, match="--resume"):
        train(cfg, tmp_path / "cut", device="cpu", progress=False)
    train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True)
    full = load_file(str(tmp_path / "full" / "state.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "state.safetensors"))
    assert full.keys() == cut.keys()
    for key in full:
        if key.startswith(("model.", "optim.", "ema.")):
            torch.testing.assert_close(cut[key], full[key], rtol=1e-5, atol=1e-6)
    assert any(k.startswith("ema.") for k in full) == (ema > 0)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["step"] == 12


def test_moving_average_is_what_is_saved_and_shipped(tmp_path, data_dir):
    """``optim.ema``: the run's weights and ``ship_model.py --last`` are the average of the
    weights over the steps (torch's AveragedModel), not the last step's weights."""
    cfg = load_config(tiny_config(tmp_path, data_dir), {"optim.ema": 0.5,
                                                        "data.val_fraction": 0.0})
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    state = load_file(str(tmp_path / "run" / "state.safetensors"))
    saved = load_file(str(tmp_path / "run" / "weights.safetensors"))
    key = next(k for k in saved if k.endswith("weight"))
    torch.testing.assert_close(saved[key], state[f"ema.module.{key}"])
    assert not torch.allclose(saved[key], state[f"model.{key}"])
    assert json.loads((tmp_path / "run" / "card.json").read_text())["weights"].startswith(
        "moving average")
    subprocess.run([sys.executable, str(REPO / "scripts" / "ship_model.py"),
                    str(tmp_path / "run"), str(tmp_path / "shipped"), "--last"], check=True,
                   capture_output=True)
    shipped = load_file(str(tmp_path / "shipped" / "weights.safetensors"))
    torch.testing.assert_close(shipped[key], state[f"ema.module.{key}"])
    cfg = load_config(tiny_config(tmp_path, data_dir), {"optim.ema": 1e-6,
                                                        "data.val_fraction": 0.0})
    train(cfg, tmp_path / "short", device="cpu", progress=False)  # an average of ~1 step
    state = load_file(str(tmp_path / "short" / "state.safetensors"))
    torch.testing.assert_close(state[f"ema.module.{key}"], state[f"model.{key}"])
    with pytest.raises(MedsrError, match="optim.ema"):
        load_config(tiny_config(tmp_path, data_dir), {"optim.ema": 1.0})


def test_ddp_with_two_gloo_processes_on_cpu(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, max_steps=4, val_every=4, checkpoint_every=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29531", "-m", "medsr", "train", str(config),
           "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    card = json.loads((tmp_path / "ddp" / "card.json").read_text())
    assert card["world_size"] == 2 and card["steps"] == 4


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_run_a_few_steps(tmp_path, data_dir, config):
    cfg = yaml.safe_load(config.read_text())
    cfg["patch"]["batch_size"] = 2  # the shipped sizes, fewer patches: keeps CI quick
    cfg["patch"]["val_patches"] = 4
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["train", str(path), "--data", str(data_dir),
                                      "--max-steps", "2", "--out", str(tmp_path / "run"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    model, card = load_model(tmp_path / "run")
    assert card["network"]["name"] == cfg["network"]["name"]


def test_bad_configs_are_refused_in_one_line(tmp_path, data_dir):
    path = tiny_config(tmp_path, data_dir)
    with pytest.raises(MedsrError, match="unknown config key"):
        load_config(path, {"optim.max_stpes": 3})
    with pytest.raises(MedsrError, match="multiple of the factor"):
        load_config(path, {"patch.size": [16, 15]})
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and result.stderr.startswith("error:")


@pytest.mark.parametrize("dims", [2, 3])
def test_trained_model_upscales_with_the_same_geometry(tmp_path, data_dir, dims):
    cfg = load_config(tiny_config(tmp_path, data_dir, dims=dims), {"optim.max_steps": 2})
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    affine = AFFINES["oblique"]
    vol = medsr.io.make_volume(phantom((20, 18, 7)), affine,
                               medsr.io.SourceInfo("nifti", "", "float32"))
    out = medsr.upscale(vol, model=tmp_path / "run" / "weights.safetensors")
    reference = medsr.upscale(vol, (1, 1, 2))  # the thick axis (4 mm), model factor 2
    assert out.shape == reference.shape == (1, 20, 18, 14)
    np.testing.assert_allclose(out.affine.numpy(), reference.affine.numpy(), atol=1e-12)
    # an untrained-ish residual net stays close to interpolation: intensities in scan units
    assert np.corrcoef(out[0].numpy().ravel(), reference[0].numpy().ravel())[0, 1] > 0.9
    with pytest.raises(MedsrError, match="×2"):
        medsr.upscale(vol, (1, 1, 3), model=tmp_path / "run")


def test_cli_upscale_with_model(tmp_path, data_dir):
    cfg = load_config(tiny_config(tmp_path, data_dir), {"optim.max_steps": 2})
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    scan = data_dir / "v0.nii.gz"
    out = tmp_path / "sr.nii.gz"
    result = CliRunner().invoke(app, ["upscale", str(scan), "-o", str(out), "--scale", "1", "1",
                                      "2", "--model", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert nib.load(str(out)).shape == (40, 40, 64)
    result = CliRunner().invoke(app, ["upscale", str(scan), "-o", str(tmp_path / "x.nii.gz"),
                                      "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no model weights" in result.stderr


def test_multi_factor_lr_network_trains_and_serves_its_range(tmp_path, data_dir):
    """An LRRefiner trains on factors 2-3 (one head each) and upscales either, and the
    validation baseline it must beat is the cubic B-spline it refines."""
    cfg = load_config(tiny_config(tmp_path, data_dir),
                      {"optim.max_steps": 4, "optim.val_every": 2, "degradation.factor": [2, 3],
                       "patch.size": [16, 24], "network.name": "lrrefiner",
                       "network.params": {"features": 8, "num_blocks": 1}})
    train(cfg, tmp_path / "run", device="cpu", progress=False)
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["input"] == "lr" and card["factors"] == [2, 3]
    assert card["network"]["factors"] == [2, 3]
    vol = medsr.io.make_volume(phantom((20, 18, 7)), AFFINES["oblique"],
                               medsr.io.SourceInfo("nifti", "", "float32"))
    for f in (2, 3):
        out = medsr.upscale(vol, (1, 1, f), model=tmp_path / "run")
        reference = medsr.upscale(vol, (1, 1, f), method="bspline")
        assert out.shape == reference.shape
        np.testing.assert_allclose(out.affine.numpy(), reference.affine.numpy(), atol=1e-12)
    with pytest.raises(MedsrError, match="2 to"):
        medsr.upscale(vol, (1, 1, 4), model=tmp_path / "run")


def test_distillation_learns_the_teachers_output_and_names_the_teacher(tmp_path, data_dir):
    """``distill``: the loss mixes the truth with a frozen teacher's output. A student equal to
    its teacher, taught by the teacher alone, has nothing to learn (its weights stay put),
    while the truth moves it; the card names the teacher and what the student learnt from."""
    small = {"optim.max_steps": 4, "optim.val_every": 4, "degradation.factor": [2, 3],
             "patch.size": [16, 24], "network.name": "lrrefiner", "data.val_fraction": 0.0,
             "network.params": {"features": 8, "num_blocks": 1}}
    train(load_config(tiny_config(tmp_path, data_dir), small), tmp_path / "teacher",
          device="cpu", progress=False)
    start = load_file(str(tmp_path / "teacher" / "weights.safetensors"))
    for weight in (1.0, 0.0):
        cfg = load_config(tiny_config(tmp_path, data_dir),
                          {**small, "network.init": str(tmp_path / "teacher"),
                           "distill.teacher": str(tmp_path / "teacher"),
                           "distill.weight": weight})
        train(cfg, tmp_path / f"student{weight}", device="cpu", progress=False)
        end = load_file(str(tmp_path / f"student{weight}" / "weights.safetensors"))
        moved = max(float((end[k] - start[k]).abs().max()) for k in start)
        assert (moved == 0.0) == (weight == 1.0), (weight, moved)
    card = json.loads((tmp_path / "student1.0" / "card.json").read_text())
    assert card["distilled_from"]["teacher"] == str(tmp_path / "teacher")
    assert card["distilled_from"]["weight"] == 1.0
    assert card["distilled_from"]["teacher_training_data"] and card["training_data"]
    with pytest.raises(MedsrError, match="does not serve"):
        train(load_config(tiny_config(tmp_path, data_dir),
                          {**small, "degradation.factor": [2, 4],
                           "distill.teacher": str(tmp_path / "teacher")}),
              tmp_path / "wide", device="cpu", progress=False)
    with pytest.raises(MedsrError, match="distill.weight"):
        load_config(tiny_config(tmp_path, data_dir), {"distill.weight": 1.5})


def test_slightly_coarser_thin_axis_says_how_to_train_on_it(tmp_path):
    """A 0.96×0.96×1.5 mm CT is refused by a 3D config with the tolerance that allows it."""
    folder = tmp_path / "ct"
    folder.mkdir()
    nib.Nifti1Image(phantom((40, 40, 32), seed=5) * 2.0, np.diag([0.96, 0.96, 1.5, 1.0])
                    ).to_filename(str(folder / "ct.nii.gz"))
    path = tiny_config(tmp_path, folder, dims=3)
    cfg = load_config(path, {"optim.max_steps": 1, "data.val_fraction": 0.0})
    with pytest.raises(MedsrError, match=r"hr_spacing_tolerance: 1\.57"):
        train(cfg, tmp_path / "refused", device="cpu", progress=False)
    cfg = load_config(path, {"optim.max_steps": 1, "data.val_fraction": 0.0,
                             "data.hr_spacing_tolerance": 1.57})
    assert train(cfg, tmp_path / "run", device="cpu", progress=False).step == 1


def test_scale_augmentation_shows_the_anatomy_on_a_coarser_grid(tmp_path, data_dir):
    """``patch.zoom``: a patch cut twice as large and shrunk shows twice the anatomy per
    pixel (a ramp rises twice as fast); without it the patch is the volume's own pixels."""
    from medsr.training.data import PairSampler, Volume

    ramp = torch.arange(200, dtype=torch.float32)[:, None, None].expand(200, 200, 200)
    volume = Volume("ramp", ramp.contiguous(), (0, 1, 2))
    path = tiny_config(tmp_path, data_dir)
    for zoom, slope in ((1.0, 1.0), (2.0, 2.0)):
        cfg = load_config(path, {"patch.zoom": [zoom, zoom], "patch.zoom_probability": 1.0,
                                 "patch.size": [32, 32], "patch.min_foreground": 0.0})
        sampler = PairSampler([volume], cfg)
        _, hr = sampler.batch(0, size=8)
        steps = [float(torch.diff(p[0], dim=d)[2:-2, 2:-2].abs().max()) for p in hr
                 for d in (0, 1)]
        assert max(steps) == pytest.approx(slope, rel=0.02)
    with pytest.raises(MedsrError, match="patch.zoom"):
        load_config(path, {"patch.zoom": [0.5, 1.0]})


def test_fine_blur_smooths_the_fine_axis_of_input_and_target_alike(tmp_path, data_dir):
    """``patch.fine_blur``: the target is blurred along its fine axis only (the degraded axis
    keeps its edges), and the input is made from that blurred target."""
    from medsr.training.data import PairSampler, Volume
    from medsr.transforms.degrade import slice_profile

    a = torch.rand(64, generator=torch.Generator().manual_seed(0))  # a[i] + a[j] + a[k]:
    volume = Volume("sum", (a[:, None, None] + a[None, :, None] + a[None, None, :] + 0.5)
                    .contiguous(), (0, 1, 2))  # steps along one axis are that axis' alone
    path = tiny_config(tmp_path, data_dir)
    roughness = {}
    for blur in (0.0, 3.0):
        cfg = load_config(path, {"patch.fine_blur": [blur, blur],
                                 "patch.fine_blur_probability": 1.0,
                                 "patch.size": [32, 32], "degradation.thickness": [1.0, 1.0],
                                 "degradation.profiles": ["box"]})
        lr, hr = PairSampler([volume], cfg).batch(0, size=8)
        roughness[blur] = [float(torch.diff(hr, dim=d).abs().mean()) for d in (2, 3)]
        expected = torch.stack([slice_profile(p, 1, 2, 2.0, "box") for p in hr])
        torch.testing.assert_close(lr, expected)
    assert roughness[3.0][0] < 0.5 * roughness[0.0][0]  # fine axis smoothed
    assert roughness[3.0][1] == pytest.approx(roughness[0.0][1], rel=1e-4)  # degraded axis kept
    with pytest.raises(MedsrError, match="patch.fine_blur"):
        load_config(path, {"patch.fine_blur": [2.0, 1.0]})
    with pytest.raises(MedsrError, match="needs a fine axis"):  # in-plane SR has none
        load_config(path, {"patch.fine_blur_probability": 0.5, "degradation.axes": 2})


def test_kspace_shrink_keeps_levels_and_rings_at_edges_as_mri_does(tmp_path, data_dir):
    """``patch.zoom_kspace_probability``: a k-space shrink keeps a constant, shows a ramp on
    the coarser grid, and rings at a step (Gibbs overshoot) where the bicubic one does not;
    the patch's own borders do not ring (mirrored before the FFT)."""
    from medsr.training.data import shrink, shrink_kspace

    assert torch.allclose(shrink_kspace(torch.full((40, 60), 3.0), [20, 30]),
                          torch.full((20, 30), 3.0), atol=1e-5)
    ramp = shrink_kspace(torch.arange(40.0)[:, None].expand(40, 60).contiguous(), [20, 30])
    assert torch.allclose(torch.diff(ramp[2:-2, 10]), torch.full((15,), 2.0), atol=0.1)
    step = torch.zeros(64, 64)
    step[:, 33:] = 1.0
    sinc, cubic = shrink_kspace(step, [32, 32]), shrink(step, [32, 32])
    far = slice(20, 26)  # 3-9 coarse pixels past the step: sinc still rings, bicubic is flat
    assert float((sinc[:, far] - 1).abs().min()) > 0.005
    assert torch.allclose(cubic[:, far], torch.ones(32, 6), atol=1e-4)
    assert float(sinc[:, :5].abs().max()) < 0.05  # near the patch's border: no wrap-round
    with pytest.raises(MedsrError, match="zoom_kspace_probability"):
        load_config(tiny_config(tmp_path, data_dir), {"patch.zoom_kspace_probability": 2.0})


def test_contrast_augmentation_keeps_background_dark_and_can_swap_tissues():
    """``patch.contrast_probability``: a random curve keeps the background at 0 and the
    range in [0, 1], and some draws reverse the order of two tissues (a T2-like look)."""
    from medsr.training.data import remap_contrast

    tissues = torch.tensor([[0.0, 0.3, 0.6, 0.9]])
    swapped = 0
    for seed in range(20):
        out = remap_contrast(tissues, np.random.default_rng(seed))[0]
        assert float(out[0]) == 0.0 and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        swapped += bool(out[1] > out[3])
    assert 0 < swapped < 20


def test_interpolate_weights_lies_on_the_line_and_lists_both_data(tmp_path):
    """``scripts/interpolate_weights.py`` (how the v0.8 MR defaults were made): the weights are
    ``(1 - a)·A + a·B`` tensor by tensor, the card lists every volume either model learnt
    from, and two architectures that differ are refused."""
    from medsr.checkpoint import save_model
    from medsr.nets import build_network, network_config

    def model(name, seed, data, features=8):
        torch.manual_seed(seed)
        net = build_network("lrrefiner", spatial_dims=2, scale=[1, 2], factors=[2, 3],
                            features=features, num_blocks=1)
        save_model(net, tmp_path / name, {"network": network_config(net), "training_data": data,
                                          "experiment": name, "steps": seed})
        return {k: v.clone() for k, v in net.state_dict().items()}

    a = model("a", 1, [{"file": "t1.nii.gz"}])
    b = model("b", 2, [{"file": "t1.nii.gz"}, {"file": "epi.nii.gz"}])
    model("wide", 3, [], features=12)
    script = str(REPO / "scripts" / "interpolate_weights.py")
    run = subprocess.run([sys.executable, script, str(tmp_path / "a"), str(tmp_path / "b"),
                          "--alpha", "0.25", "--out", str(tmp_path / "mix")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    mixed = load_file(str(tmp_path / "mix" / "weights.safetensors"))
    for key in a:
        torch.testing.assert_close(mixed[key], 0.75 * a[key] + 0.25 * b[key])
    card = json.loads((tmp_path / "mix" / "card.json").read_text())
    assert [d["file"] for d in card["training_data"]] == ["t1.nii.gz", "epi.nii.gz"]
    assert [m["weight"] for m in card["interpolated_from"]] == [0.75, 0.25]
    load_model(tmp_path / "mix")  # loads as a model
    bad = subprocess.run([sys.executable, script, str(tmp_path / "a"), str(tmp_path / "wide"),
                          "--alpha", "0.5", "--out", str(tmp_path / "no")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "different architectures" in bad.stderr
    assert not (tmp_path / "no").exists()


def test_deepen_model_keeps_the_output_and_names_its_source(tmp_path):
    """``scripts/deepen_model.py`` (how the v0.10 coarse MR model started): the deeper model
    computes what the source did at every factor, keeps every source tensor, its new blocks
    learn (their first convolution is not zero), and a depth that is not deeper is refused."""
    from medsr.checkpoint import save_model
    from medsr.nets import build_network, network_config

    torch.manual_seed(0)
    net = build_network("lrrefiner", spatial_dims=2, scale=[1, 2], factors=[2, 3], features=8,
                        num_blocks=2)
    save_model(net, tmp_path / "src", {"network": network_config(net), "name": "src",
                                       "training_data": [{"file": "epi.nii.gz"}]})
    script = str(REPO / "scripts" / "deepen_model.py")
    run = subprocess.run([sys.executable, script, str(tmp_path / "src"), "--blocks", "5",
                          "--out", str(tmp_path / "deep")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    deep, card = load_model(tmp_path / "deep")
    assert card["network"]["num_blocks"] == 5 and len(deep.body) == 5
    assert card["deepened_from"]["blocks"] == 2
    assert card["training_data"] == [{"file": "epi.nii.gz"}]
    x = torch.randn(2, 1, 16, 6)
    with torch.no_grad():
        for f in (2, 3):
            torch.testing.assert_close(deep(x, f), net(x, f))
    src = net.state_dict()
    for key, value in deep.state_dict().items():
        if key in src:
            torch.testing.assert_close(value, src[key])
    assert float(deep.body[4].conv1.weight.abs().sum()) > 0
    bad = subprocess.run([sys.executable, script, str(tmp_path / "src"), "--blocks", "2",
                          "--out", str(tmp_path / "no")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--blocks must exceed" in bad.stderr
    assert not (tmp_path / "no").exists()


def test_cpu_bf16_steps_only_where_asked_and_native(tmp_path, data_dir, monkeypatch):
    """``optim.cpu_bf16`` trains in bf16 autocast on a CPU with native bf16 (and ``amp``);
    elsewhere, or unasked, in float32."""
    from medsr import runtime
    from medsr.training import loop

    made = []
    real = loop.Stepper

    def spy(*args, **kwargs):
        stepper = real(*args, **kwargs)
        made.append((stepper.amp, stepper.amp_dtype))
        return stepper

    monkeypatch.setattr(loop, "Stepper", spy)
    for native, asked, amp in ((True, True, True), (False, True, True), (True, False, True),
                               (True, True, False)):
        monkeypatch.setattr(runtime, "native_bf16", lambda native=native: native)
        cfg = load_config(tiny_config(tmp_path, data_dir, cpu_bf16=asked, amp=amp))
        train(cfg, tmp_path / f"run{len(made)}", device="cpu", progress=False)
    assert made[0] == (True, torch.bfloat16)
    assert [m[0] for m in made[1:]] == [False, False, False]
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "run0" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses and np.isfinite(losses).all()
