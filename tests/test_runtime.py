"""ONNX Runtime, OpenVINO and PyTorch compute the same planes; PyTorch is the fallback."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
import torch

from medsr.nets import build_network
from medsr.runtime import plane_runner


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
@pytest.mark.parametrize("name, params, factor", [
    ("lrrefiner", {"scale": (1, 2), "factors": (2, 4), "features": 8, "num_blocks": 2}, 3),
    ("edsr", {"scale": (1, 1), "features": 8, "num_blocks": 2}, 1),
])
def test_onnx_and_torch_agree(name, params, factor, engine, monkeypatch):
    """In float32 both CPU engines compute PyTorch's planes."""
    monkeypatch.setenv("MEDSR_PRECISION", "fp32")
    torch.manual_seed(0)
    net = build_network(name, spatial_dims=2, **params).eval()
    planes = torch.rand(5, 1, 23, 11).numpy()
    onnx = plane_runner(net, torch.device("cpu"), factor, planes[:1], engine)
    eager = plane_runner(net, torch.device("cpu"), factor, planes[:1], "torch")
    a, b = onnx(planes), eager(planes)
    assert a.shape == b.shape == (5, 1, 23, 11 * factor)
    np.testing.assert_allclose(a, b, atol=1e-5)
    taller = torch.rand(2, 1, 40, 11).numpy()  # the other plane axis and the batch are dynamic
    np.testing.assert_allclose(onnx(taller), eager(taller), atol=1e-5)


def _without(monkeypatch, *modules):
    """Make ``modules`` uninstalled: neither found nor importable."""
    import importlib.util

    real_import, real_find = builtins.__import__, importlib.util.find_spec

    def no_import(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_import)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in modules else real_find(name, *a))


def test_falls_back_to_torch_without_onnxruntime_or_openvino(monkeypatch):
    _without(monkeypatch, "onnxruntime", "openvino")
    net = build_network("edsr", spatial_dims=2, scale=(1, 1), features=4, num_blocks=1).eval()
    planes = torch.rand(2, 1, 9, 7)
    out = plane_runner(net, torch.device("cpu"), 1, planes[:1].numpy(), "auto")(planes.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(out, net(planes).numpy(), atol=1e-6)
    for backend, name in (("onnx", "ONNX Runtime"), ("openvino", "OpenVINO")):
        with pytest.raises(RuntimeError, match=name):
            plane_runner(net, torch.device("cpu"), 1, planes[:1].numpy(), backend)


def test_auto_takes_openvino_else_onnxruntime(monkeypatch):
    from medsr import runtime

    net = _refiner()
    planes = torch.rand(2, 1, 16, 9).numpy()
    plane_runner(net, torch.device("cpu"), 3, planes[:1], "auto")(planes)
    kinds = {key[2] for key in runtime._SESSIONS[net]}
    assert kinds == {"openvino"}
    _without(monkeypatch, "openvino")
    assert runtime.engine("auto") == "onnx"
    again = plane_runner(net, torch.device("cpu"), 3, planes[:1], "auto")(planes)
    assert {key[2] for key in runtime._SESSIONS[net]} == {"openvino", "onnx"}
    np.testing.assert_allclose(again, net(torch.from_numpy(planes), factor=3).detach().numpy(),
                               atol=1e-5)


def test_precision_auto_is_close_and_fp32_exact(monkeypatch, openvino_precisions):
    """``auto`` may compute in bfloat16 (CPUs with AMX / AVX-512 BF16): outputs stay within
    bfloat16's rounding of the network's correction; ``fp32`` gives PyTorch's planes."""
    from medsr import runtime
    from medsr.errors import MedsrError

    net = _refiner()
    with torch.no_grad():  # a correction as large as the planes, so rounding shows
        for p in net.parameters():
            p.mul_(3.0)
    planes = torch.rand(4, 1, 32, 12)
    with torch.no_grad():
        truth = net(planes, factor=3).numpy()
        correction = net.residual(planes, 3).numpy()
    made = openvino_precisions
    auto = plane_runner(net, "cpu", 3, planes[:1].numpy(), "openvino")(planes.numpy())
    err = np.sqrt(np.mean((auto - truth) ** 2)) / np.sqrt(np.mean(correction ** 2))
    assert err < 0.02  # bfloat16 keeps 8 bits of mantissa
    import openvino as ov

    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert made == ["bf16"]  # where the CPU has it, auto takes it
    monkeypatch.setenv("MEDSR_PRECISION", "fp32")
    fp32 = plane_runner(net, "cpu", 3, planes[:1].numpy(), "openvino")(planes.numpy())
    np.testing.assert_allclose(fp32, truth, atol=1e-5)
    assert made[-1] == "f32"
    monkeypatch.setenv("MEDSR_PRECISION", "half")
    with pytest.raises(MedsrError, match="MEDSR_PRECISION='half'"):
        runtime.precision()
    runtime.set_precision("fp32")
    try:
        assert runtime.precision() == "fp32"
        with pytest.raises(MedsrError, match="unknown precision"):
            runtime.set_precision("bf16")
    finally:
        runtime._PRECISION.clear()


def _refiner():
    torch.manual_seed(0)
    return build_network("lrrefiner", spatial_dims=2, scale=(1, 2), factors=(2, 4), features=8,
                         num_blocks=2).eval()


def test_refiner_graph_serves_every_width_and_is_kept_on_disk(tmp_path, monkeypatch):
    from medsr import runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    net = _refiner()
    cpu = torch.device("cpu")
    run = plane_runner(net, cpu, 3, torch.rand(1, 1, 23, 11).numpy(), "onnx")
    for width in (11, 7, 30):  # one graph: the B-spline skip is added outside it
        planes = torch.rand(3, 1, 19, width)
        np.testing.assert_allclose(run(planes.numpy()), net(planes, factor=3).detach().numpy(),
                                   atol=1e-5)
    graphs = list((tmp_path / "medsr" / "onnx").glob("*.onnx"))
    assert len(graphs) == 1
    # a new process (no session in memory) loads the graph instead of exporting it
    again = _refiner()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    planes = torch.rand(2, 1, 16, 9)
    rerun = runtime.plane_runner(again, cpu, 3, planes[:1].numpy(), "onnx")
    np.testing.assert_allclose(rerun(planes.numpy()), net(planes, factor=3).detach().numpy(),
                               atol=1e-5)


def test_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    blocked = tmp_path / "not_a_folder"  # as a read-only home would: writing fails
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    planes = torch.rand(2, 1, 16, 9)
    net = _refiner()
    run = plane_runner(net, torch.device("cpu"), 2, planes[:1].numpy(), "onnx")
    np.testing.assert_allclose(run(planes.numpy()), net(planes, factor=2).detach().numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("modality, kind", [("CT", "through"), ("MR", "through"),
                                            ("CT", "inplane"), ("MR", "inplane")])
def test_a_saved_model_names_its_graph_without_torch(tmp_path, monkeypatch, modality, kind):
    """A shipped model's graph is found by what its folder holds: the name a later run
    computes without torch (:class:`GraphNet`, with the same reach as the network) is the one
    its first run exported under; weights changed after loading (a fine-tune) get their own."""
    from medsr.background import plane_reach
    from medsr.checkpoint import load_model, read_card
    from medsr.inference import receptive_radius
    from medsr.models import default_model
    from medsr.runtime import GraphNet, _graph_key, cached_network

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = default_model(modality, kind)
    weights, card = read_card(folder)
    assert cached_network(weights, card, 3) is None  # nothing cached yet
    net, _ = load_model(folder)
    lr_axes = int(card["network"].get("lr_axes", 1))
    planes = torch.rand(2, 1, 12, 12).numpy()
    ran = plane_runner(net, torch.device("cpu"), 3, planes[:1], "onnx")(planes)
    graph = cached_network(weights, card, 3)
    assert isinstance(graph, GraphNet) and graph.path(3).is_file()
    assert graph.path(3).name == f"{_graph_key(net, 3)}.onnx"
    assert (graph.radius, graph.reach) == (receptive_radius(net), plane_reach(net))
    assert graph.lr_axes == lr_axes
    again = plane_runner(graph, "cpu", 3, planes[:1], "onnx")(planes)
    np.testing.assert_array_equal(again, ran)
    auto = plane_runner(graph, "cpu", 3, planes[:1], "auto")(planes)  # OpenVINO: bf16 maybe
    np.testing.assert_allclose(auto, ran, atol=0.02 * max(1.0, float(np.abs(ran).max())))
    with torch.no_grad():
        np.testing.assert_allclose(again, net(torch.from_numpy(planes), factor=3).numpy(),
                                   atol=1e-5)
        next(net.parameters()).add_(0.01)
    assert _graph_key(net, 3) != _graph_key(load_model(folder)[0], 3)
    with pytest.raises(ValueError, match="ONNX Runtime on the CPU"):
        plane_runner(graph, "cpu", 3, planes[:1], "torch")


@pytest.mark.parametrize("driver", [None, "/proc/driver/nvidia/version", "/dev/nvidia0",
                                    "/dev/kfd"])
def test_auto_device_skips_torch_only_where_no_gpu_driver_is(monkeypatch, driver):
    """``--device auto`` may run a cached graph without torch only on a machine with no GPU
    driver; with an NVIDIA or ROCm driver present, torch decides (and finds the GPU)."""
    import shutil

    from medsr import device

    real = os.path.exists
    monkeypatch.setattr(device.os.path, "exists",
                        lambda p: p == driver or (p not in _DRIVERS and real(p)))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert device.surely_cpu("auto") == (driver is None)
    assert device.surely_cpu("cpu") and not device.surely_cpu("cuda")


_DRIVERS = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/kfd")
