"""Background skipping (medsr/background.py): the body's output is unchanged, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.background import BodyRows, body_rows, plane_reach
from medsr.inference import _body_only, receptive_radius
from medsr.methods import load_cached, make_upscaler
from medsr.models import default_model
from medsr.runtime import plane_runner
from medsr.upscaling import run

AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])
AIR_SD = 8.0


def head(shape=(90, 100, 8), modality="CT", seed=0) -> np.ndarray:
    """A head in air: an ellipse narrowing along z, a bright skull ring, textured brain; air
    at -1000 HU with noise (CT), or a Rayleigh noise floor (MR)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt((x / 0.45) ** 2 + (y / 0.5) ** 2) / (1.0 - 0.3 * np.abs(z))
    tissue = np.where(r < 0.85, 35.0 + 15 * np.sin(7 * x) * np.cos(5 * y), 1200.0)
    if modality == "CT":
        air = -1000.0 + rng.normal(0, AIR_SD, shape)
        return np.where(r < 1.0, tissue + rng.normal(0, AIR_SD, shape), air).astype(np.float32)
    signal = np.where(r < 1.0, np.where(r < 0.85, 400 + 100 * np.sin(7 * x), 700.0), 0.0)
    noise = rng.normal(0, AIR_SD, (2, *shape))
    return np.hypot(signal + noise[0], noise[1]).astype(np.float32)


def upscale(volume, modality, skip, **options):
    up = make_upscaler(volume.shape, AFFINE, method="default", scale=(1, 1, 3),
                       modality=modality)
    up.skip_background = skip
    out, sd, _ = run(volume[None], up, **options)
    return up, out[0], (sd[0] if sd is not None else None)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_body_is_unchanged_bit_for_bit(modality):
    volume = head(modality=modality)
    _, before, sd_before = upscale(volume, modality, False, uncertainty=True)
    up, after, sd_after = upscale(volume, modality, True, uncertainty=True)
    body = body_rows(volume, 2, up.background).views[0]
    assert 0.3 < body.mean() < 0.9  # the phantom has background lines to skip
    assert np.array_equal(after[body], before[body])
    assert np.array_equal(sd_after[body], sd_before[body])
    assert not np.array_equal(after[~body], before[~body])  # the lever did act
    _, slabs, _ = upscale(volume, modality, True, slab_voxels=10_000)
    assert np.array_equal(slabs, after)  # lines are judged alike in slabs


def test_body_lines_cover_the_networks_receptive_field():
    net, card = load_cached(default_model("CT"), torch.device("cpu"))
    reach = plane_reach(net)
    assert 0 < reach <= receptive_radius(net)
    x = torch.zeros(1, 1, 61, 9)
    bumped = x.clone()
    bumped[0, 0, 30, 4] = 1.0
    with torch.no_grad():
        changed = (net(bumped, factor=3) - net(x, factor=3)).abs()[0, 0].sum(dim=1) > 0
    rows = torch.nonzero(changed).flatten()
    assert int(rows.min()) >= 30 - reach and int(rows.max()) <= 30 + reach
    # each plane's body rows come out as the network makes them on the whole plane, for
    # body rows anywhere (edges, gaps, planes without any) and both runtimes
    rng = np.random.default_rng(1)
    planes = rng.normal(0, 0.3, (6, 70, 12)).astype(np.float32)
    keep = np.zeros((6, 70), dtype=bool)
    keep[0, [0, 1, 40]] = keep[1, 69] = keep[3, 20:30] = keep[4, [10, 50]] = keep[5, :] = True
    for backend in ("torch", "auto"):
        runner = plane_runner(net, torch.device("cpu"), 3, planes[:1, None], backend)
        whole = runner(planes[:, None])[:, 0]
        part = _body_only(runner, planes, 3, BodyRows({0: keep}, reach), 0, 0)
        assert np.array_equal(part[keep], whole[keep])
        assert not np.array_equal(part[0, 2:39], whole[0, 2:39])  # B-spline there


def test_an_all_body_volume_is_unchanged():
    volume = head(modality="CT")
    volume[volume < -500] = 20.0  # tissue everywhere: no background
    _, before, _ = upscale(volume, "CT", False)
    up, after, _ = upscale(volume, "CT", True)
    assert body_rows(volume, 2, up.background).views[0].all()
    assert np.array_equal(after, before)


def test_background_error_is_within_the_noise():
    volume = head(modality="CT")
    _, before, _ = upscale(volume, "CT", False)
    up, after, _ = upscale(volume, "CT", True)
    outside = ~body_rows(volume, 2, up.background).views[0]
    diff = (after - before)[outside]
    assert np.sqrt(np.mean(np.square(diff))) <= AIR_SD
    assert np.abs(diff).max() <= 6 * AIR_SD


def test_upscale_volume_switches_it_off():
    from medsr.io import make_frames
    from medsr.io.meta import SourceInfo
    from medsr.upscaling import upscale_volume

    volume = head(modality="CT")
    frames = make_frames(volume[None], AFFINE, SourceInfo("nifti", "", "float32", modality="CT"))
    on, off = (upscale_volume(frames, (1, 1, 3), method="default", skip_background=skip)
               for skip in (True, False))
    _, before, _ = upscale(volume, "CT", False)
    assert np.array_equal(np.asarray(off.array)[0], before)
    assert not np.array_equal(np.asarray(on.array)[0], before)
