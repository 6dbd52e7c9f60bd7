"""Tests of medsr.nets: shapes for 2D/3D and per-axis scales, registry, rebuild, pixel shuffle."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from monai.networks.utils import pixelshuffle as monai_pixelshuffle
from safetensors.torch import load_file, save_file
from torch import nn

from medsr.nets import (EDSR, NETWORKS, VDSR, build_network, interpolate, network_config,
                        pixel_shuffle)

#: Tiny hyperparameters per family, to keep the tests fast.
TINY = {
    "srcnn": {"features": (8, 4), "kernel_sizes": (5, 1, 3)},
    "vdsr": {"features": 8, "depth": 3},
    "espcn": {"features": (8, 4)},
    "edsr": {"features": 8, "num_blocks": 2},
}
SCALES = [(2, 2), (1, 3), (3, 1), (1, 1, 3), (2, 2, 1), (2, 1, 3)]
#: networks for any scale and rank (LRRefiner is 2D, thick axis last: tested on its own)
GENERIC = sorted(n for n in NETWORKS if n != "lrrefiner")


class Tiny(nn.Module):
    """A user network reached as ``test_nets:Tiny`` (no ``config`` of its own)."""

    def __init__(self, *, spatial_dims: int, scale, in_channels: int = 1) -> None:
        super().__init__()
        self.scale = tuple(scale)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate(self.conv(x), self.scale)


def tiny(name: str, scale, **extra) -> nn.Module:
    torch.manual_seed(0)
    return build_network(name, spatial_dims=len(scale), scale=scale, **TINY[name], **extra)


def lr_input(scale, channels: int = 1, batch: int = 2) -> torch.Tensor:
    shape = (7, 6) if len(scale) == 2 else (5, 6, 4)
    return torch.rand(batch, channels, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scale", SCALES, ids=str)
@pytest.mark.parametrize("name", GENERIC)
def test_shape_and_gradients(name, scale):
    net = tiny(name, scale, in_channels=2)
    x = lr_input(scale, channels=2).requires_grad_(True)
    y = net(x)
    assert y.shape == (*x.shape[:2], *(n * s for n, s in zip(x.shape[2:], scale)))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", GENERIC)
def test_config_is_json_and_rebuilds(name, tmp_path):
    net = tiny(name, (2, 1, 3)).eval()
    cfg = network_config(net)
    assert cfg["name"] == name == net.name
    assert cfg["scale"] == [2, 1, 3] and cfg["spatial_dims"] == 3
    cfg = json.loads(json.dumps(cfg))
    rebuilt = build_network(**cfg).eval()
    rebuilt.load_state_dict(net.state_dict())  # strict: same names and shapes
    x = lr_input((2, 1, 3))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))
    save_file(net.state_dict(), tmp_path / "weights.safetensors")
    loaded = build_network(**cfg).eval()
    loaded.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


@pytest.mark.parametrize("name", GENERIC)
def test_defaults_start_near_interpolation(name):
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=2, scale=(1, 4))
    x = lr_input((1, 4))
    with torch.no_grad():
        diff = (net(x) - interpolate(x, (1, 4))).abs().mean()
    assert diff < 0.1 * x.abs().mean()


def test_registry_by_path_and_unknown():
    net = build_network("test_nets:Tiny", spatial_dims=2, scale=(1, 2))
    assert isinstance(net, Tiny) and net.config == {"spatial_dims": 2, "scale": (1, 2)}
    cfg = network_config(net)
    assert cfg["name"] == "test_nets:Tiny"
    assert isinstance(build_network(**cfg), Tiny)
    assert net(torch.rand(1, 1, 4, 5)).shape == (1, 1, 4, 10)
    with pytest.raises(ValueError) as err:
        build_network("rcan", spatial_dims=2, scale=(2, 2))
    assert all(key in str(err.value) for key in NETWORKS)
    for bad in ("no_such_module_xyz:Net", "test_nets:Missing", "math:pi"):
        with pytest.raises(ValueError, match="network"):
            build_network(bad, spatial_dims=2, scale=(2, 2))


@pytest.mark.parametrize("kwargs", [
    {"spatial_dims": 4, "scale": (1, 1, 1, 2)},
    {"spatial_dims": 3, "scale": (1, 2)},
    {"spatial_dims": 2, "scale": (0, 2)},
    {"spatial_dims": 2, "scale": (1.5, 2)},
    {"spatial_dims": 2, "scale": "12"},
    {"spatial_dims": 2, "scale": (2, 2), "in_channels": 0},
    {"spatial_dims": 2, "scale": (2, 2), "kernel_size": 4},
    {"spatial_dims": 2, "scale": (2, 2), "num_blocks": -1},
    {"spatial_dims": 2, "scale": (2, 2), "res_scale": 0.0},
    {"spatial_dims": 2, "scale": (2, 2), "residual": "yes"},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        EDSR(**kwargs)


def test_bad_family_arguments_and_input():
    with pytest.raises(ValueError, match="depth"):
        VDSR(spatial_dims=2, scale=(2, 2), depth=1)
    with pytest.raises(ValueError, match="activation"):
        build_network("espcn", spatial_dims=2, scale=(2, 2), activation="gelu")
    with pytest.raises(ValueError, match="kernel_sizes"):
        build_network("srcnn", spatial_dims=2, scale=(2, 2), kernel_sizes=(9, 5))
    with pytest.raises(ValueError, match="expects"):
        tiny("edsr", (2, 2))(torch.rand(1, 1, 4, 4, 4))


@pytest.mark.parametrize("scale,channels", [((2, 3), 1), ((2, 1, 3), 2), ((1, 1, 4), 1)], ids=str)
def test_pixel_shuffle_places_every_value(scale, channels):
    spatial = (3, 4, 2)[: len(scale)]
    hr_spatial = tuple(n * s for n, s in zip(spatial, scale))
    hr = torch.arange(2 * channels * math.prod(hr_spatial), dtype=torch.float32)
    hr = hr.reshape(2, channels, *hr_spatial)
    # By definition, channel c * prod(scale) + offset(r) holds the sub-voxel r of every LR voxel.
    x = torch.empty(2, channels * math.prod(scale), *spatial)
    for c in range(channels):
        for i, r in enumerate(itertools.product(*(range(s) for s in scale))):
            sub = tuple(slice(rk, None, sk) for rk, sk in zip(r, scale))
            x[:, c * math.prod(scale) + i] = hr[(slice(None), c, *sub)]
    assert torch.equal(pixel_shuffle(x, scale), hr)


@pytest.mark.parametrize("dims,factor", [(2, 2), (2, 3), (3, 2)])
def test_pixel_shuffle_matches_monai(dims, factor):
    x = torch.randn(2, 3 * factor**dims, *(3, 4, 2)[:dims])
    assert torch.equal(pixel_shuffle(x, (factor,) * dims), monai_pixelshuffle(x, dims, factor))
    if dims == 2:
        assert torch.equal(pixel_shuffle(x, (factor,) * 2), nn.functional.pixel_shuffle(x, factor))


def test_icnr_upsampler_starts_as_nearest_neighbour():
    net = tiny("edsr", (2, 1, 3))
    feat = torch.rand(1, 8, 3, 4, 2)
    with torch.no_grad():
        up = net.upsample(feat)
    # Every 2x1x3 sub-voxel block holds one value per channel.
    blocks = up.reshape(1, 8, 3, 2, 4, 1, 2, 3)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1, :, :1].expand_as(blocks))


def test_interpolate_follows_subdivision_convention():
    # A linear ramp in index space stays linear: output j samples input (j + 0.5) / s - 0.5.
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 1, 6).repeat(1, 1, 2, 1)
    y = interpolate(x, (1, 4))
    j = torch.arange(24, dtype=torch.float32)
    expected = ((j + 0.5) / 4 - 0.5).clamp(0, 5)
    assert torch.allclose(y[0, 0, 1], expected, atol=1e-6)


@pytest.mark.parametrize("name", GENERIC)
def test_cpu_autocast_bfloat16(name):
    net = tiny(name, (1, 1, 3))
    x = lr_input((1, 1, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert y.shape == (2, 1, 5, 6, 12) and torch.isfinite(y).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", GENERIC)
def test_cuda_autocast(name, dtype):
    net = tiny(name, (1, 1, 3)).cuda()
    x = lr_input((1, 1, 3)).cuda()
    with torch.autocast("cuda", dtype=dtype):
        y = net(x)
    y.float().mean().backward()
    assert y.shape == (2, 1, 5, 6, 12) and torch.isfinite(y).all()


def test_tiny_edsr_overfits_one_image():
    torch.manual_seed(0)
    g = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    hr = (0.6 * (g[0] ** 2 + g[1] ** 2 < 0.5) + 0.2 * torch.sin(6 * g[0] + 5 * g[1]) + 0.2)
    hr = hr[None, None]
    lr = hr.reshape(1, 1, 32, 16, 2).mean(-1)  # thick "slices": average pairs along the last axis
    baseline = nn.functional.mse_loss(interpolate(lr, (1, 2)), hr).item()
    net = EDSR(spatial_dims=2, scale=(1, 2), features=16, num_blocks=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(lr), hr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = nn.functional.mse_loss(net(lr), hr).item()
    assert final < 0.6 * baseline, (final, baseline)  # about 0.2-0.4 over seeds


def test_lrrefiner_one_body_a_head_per_factor():
    from medsr.nets.lrsr import bspline_matrix

    torch.manual_seed(0)
    net = build_network("lrrefiner", spatial_dims=2, scale=(1, 2), factors=(2, 5), features=8,
                        num_blocks=2)
    x = torch.rand(3, 1, 12, 7, requires_grad=True)
    for f in range(2, 6):
        y = net(x, factor=f)
        assert y.shape == (3, 1, 12, 7 * f)
        # an untrained net is close to the cubic B-spline of its input (its skip)
        spline = x @ bspline_matrix(7, f).T
        assert (y - spline).abs().mean() < 0.2 * x.abs().mean()
    net(x, factor=4).square().mean().backward()
    assert x.grad is not None and net.heads["4"][2].weight.grad.abs().sum() > 0
    assert net.heads["3"][2].weight.grad is None  # only the used head learns
    with pytest.raises(ValueError, match="factors"):
        net(x, factor=6)
    cfg = json.loads(json.dumps(network_config(net)))
    rebuilt = build_network(**cfg)
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x, factor=3), net(x, factor=3))
    with pytest.raises(ValueError, match="2D"):
        build_network("lrrefiner", spatial_dims=3, scale=(1, 1, 2), factors=(2, 3))


def test_narrowing_a_model_keeps_what_it_learnt():
    """:mod:`medsr.nets.narrow`: when 8 of the 32 channels of each group (the residual
    stream, each block's inner channels, each head's features) carry nothing, narrowing to 24
    drops exactly those and computes the same function (so each channel's weights stay
    together through every slicing and the sub-pixel grouping)."""
    from medsr.checkpoint import load_model
    from medsr.models import default_model
    from medsr.nets.narrow import narrow

    net = load_model(default_model("CT"), "cpu")[0].eval()
    gen = torch.Generator().manual_seed(0)

    def dead() -> torch.Tensor:
        return torch.randperm(32, generator=gen)[:8]

    w = net.state_dict()
    stream = dead()
    for key in ["conv_first", "conv_after_body"] + [f"body.{i}.conv2" for i in range(4)]:
        w[f"{key}.weight"][stream] = 0
        w[f"{key}.bias"][stream] = 0
    w["conv_after_body.weight"][:, stream] = 0
    for i in range(4):
        inner = dead()
        w[f"body.{i}.conv1.weight"][inner] = 0
        w[f"body.{i}.conv1.bias"][inner] = 0
        w[f"body.{i}.conv1.weight"][:, stream] = 0
        w[f"body.{i}.conv2.weight"][:, inner] = 0
    for f in net.heads:
        r, features = int(f), dead()
        up = w[f"heads.{f}.0.conv.weight"].view(32, r, 32, 3, 3)
        up[features] = 0
        up[:, :, stream] = 0
        w[f"heads.{f}.0.conv.bias"].view(32, r)[features] = 0
        w[f"heads.{f}.2.weight"][:, features] = 0
    net.load_state_dict(w)
    small = narrow(net, 24).eval()
    assert small.config["features"] == 24
    assert sum(p.numel() for p in small.parameters()) < 0.6 * sum(
        p.numel() for p in net.parameters())
    x = torch.rand(2, 1, 24, 10)
    with torch.no_grad():
        for f in (2, 3, 5, 8):
            assert torch.allclose(small(x, factor=f), net(x, factor=f), atol=1e-5), f


def test_narrowing_refuses_what_it_cannot_do():
    from medsr.nets.narrow import narrow

    with pytest.raises(ValueError, match="only an lrrefiner"):
        narrow(build_network("edsr", spatial_dims=2, scale=[1, 2], features=16, num_blocks=2), 8)
    wide = build_network("lrrefiner", spatial_dims=2, scale=[1, 2], factors=[2, 3], features=8,
                         num_blocks=1)
    with pytest.raises(ValueError, match="cannot widen"):
        narrow(wide, 16)
