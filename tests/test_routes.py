"""``--method auto`` on an in-plane request weighs the in-plane network against the
through-plane network run along each plane axis, on the scan's own slices, and keeps the
better (:func:`medsr.upscaling.choose_route`, :class:`medsr.methods.PlaneChain`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import phantom
from monai.data import MetaTensor

import medsr
from medsr.methods import PlaneChain, make_upscaler, plane_chain
from medsr.upscaling import run


def _scan(modality: str, shape=(48, 40, 12), slice_mm: float = 3.0) -> MetaTensor:
    arr = phantom(shape).astype(np.float32)
    if modality == "CT":
        arr = arr / arr.max() * 1400 - 1000
    affine = np.diag([0.8, 0.8, slice_mm, 1.0])
    return MetaTensor(torch.from_numpy(arr[None]), affine=torch.from_numpy(affine))


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_auto_keeps_the_route_that_wins_on_the_scan(modality):
    out = medsr.upscale(_scan(modality), (2, 2, 1), modality=modality)
    weighed = out.meta["medsr_routes"]
    assert [w["method"] for w in weighed] == ["default in-plane",
                                              "default along each in-plane axis"]
    best = max(weighed, key=lambda w: w["learned_psnr"])["method"]
    assert out.meta["medsr_method"] in (best, "bspline")
    if out.meta["medsr_method"] == "bspline":  # the winner still lost to B-spline
        assert not out.meta["medsr_selfcheck"]["passed"]
    else:  # the self-check recorded is the kept route's
        assert out.meta["medsr_selfcheck"]["method"] == best
        assert out.meta["medsr_selfcheck"]["learned_psnr"] == pytest.approx(
            max(w["learned_psnr"] for w in weighed), abs=1e-3)
    assert out.shape[1:] == (96, 80, 12)


def test_the_routes_differ_between_these_scans():
    """The two phantoms above pick different routes: a choice that ignored the check would
    fail one of them."""
    picks = {m: medsr.upscale(_scan(m), (2, 2, 1), modality=m).meta["medsr_method"]
             for m in ("CT", "MR")}
    assert picks == {"CT": "default in-plane", "MR": "default along each in-plane axis"}


def test_asked_methods_are_not_weighed():
    out = medsr.upscale(_scan("MR"), (2, 2, 1), method="default", modality="MR")
    assert out.meta["medsr_method"] == "default in-plane" and "medsr_routes" not in out.meta
    out = medsr.upscale(_scan("MR"), (1, 1, 3), modality="MR")  # through-plane: one route
    assert "medsr_routes" not in out.meta


def test_plane_chain_is_consistent_and_slabs_match_the_whole():
    vol = _scan("MR", (32, 28, 16), 1.0)  # near-isotropic: the views across the slabs run
    frames = vol[0].numpy()[None].astype(np.float32)
    plane = make_upscaler(frames.shape[1:], vol.affine.numpy(), method="default",
                          scale=(2, 2, 1), modality="MR", device="cpu")
    chain = plane_chain(plane, "MR")
    assert isinstance(chain, PlaneChain) and chain.operators() == plane.operators()
    assert chain.through_plane() is None and chain.slab_axes == [2]
    whole, _, report = run(frames, chain, slab_voxels=10**9)
    assert report.psnr_after[0] > 100  # re-degraded, it reproduces the input
    again = plane_chain(plane, "MR")
    slabs, _, _ = run(frames, again, slab_voxels=64 * 56 * 4)  # 4 slabs of 4 slices
    np.testing.assert_allclose(slabs, whole, atol=1e-3 * float(np.ptp(whole)))
