"""``medsr fuse``: the common grid, each stack's operator and its adjoint, the joint solve,
registration, stacks left out, bad input, the command line and the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import phantom, rotation
from test_cli import assert_one_line_error, run

import medsr
from medsr.errors import MedsrError
from medsr.fusion.grid import Grid, common_grid, resample_onto
from medsr.fusion.operators import StackOperator
from medsr.fusion.simulate import centre_of, rigid, thick_stack
from medsr.fusion.solve import laplacian, solve
from medsr.transforms.degrade import slice_profile

SHAPE = (32, 28, 24)
ORIGIN = np.array([-10.0, 5.0, 3.0])


def truth_affine() -> np.ndarray:
    a = np.eye(4)
    a[:3, 3] = ORIGIN
    return a


def blobs(shape=(48, 44, 40), seed: int = 1) -> np.ndarray:
    """A head-like phantom with off-centre blobs of several sizes: no symmetry for a rigid
    motion to hide in (what registration needs)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum((g / s) ** 2 for g, s in zip(grids, (0.8, 0.75, 0.85)))
    vol = np.where(r2 < 1.0, 400.0, 0.0)
    for _ in range(14):
        c = rng.uniform(-0.55, 0.55, 3)
        s = rng.uniform(0.08, 0.25, 3)
        vol += rng.uniform(150, 500) * (sum(((g - ci) / si) ** 2
                                            for g, ci, si in zip(grids, c, s)) < 1.0)
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(vol, 0.7).astype(np.float32)


def coronal_affine(n_y: int, factor: int) -> np.ndarray:
    """A coronal stack of the truth grid: array axes (x, z, -y), ``factor``-mm slices along
    y, last slice first."""
    a = np.zeros((4, 4))
    a[3, 3] = 1
    a[:3, 0], a[:3, 1], a[:3, 2] = [1, 0, 0], [0, 0, 1], [0, -factor, 0]
    a[:3, 3] = ORIGIN + [0, n_y - 1 - (factor - 1) / 2, 0]
    return a


# the grid -------------------------------------------------------------------------------------
def test_grid_covers_the_common_extent_at_the_finest_in_plane_spacing():
    x = phantom(SHAPE)
    axial = thick_stack(x, truth_affine(), 2, 4)
    coronal = (np.zeros((32, 24, 7)), coronal_affine(28, 4))
    sag = thick_stack(x, truth_affine() @ np.diag([1, 1.5, 1.5, 1]), 0, 3)  # 3 × 1.5 × 1.5
    shapes, affines = [s[0].shape for s in (axial, coronal, sag)], [axial[1], coronal[1],
                                                                     sag[1]]
    grid = common_grid(shapes, affines)
    assert np.allclose(grid.spacing, 1.0)
    assert np.allclose(grid.affine[:3, 3], ORIGIN)  # on the first stack's lattice
    assert np.allclose(grid.affine[:3, :3], np.eye(3))  # the first stack's orientation
    assert grid.shape == (30, 28, 24)  # the sagittal stack: 10 slices of 3 mm
    union = common_grid(shapes, affines, extent="union")
    # its 28 × 24 pixels of 1.5 mm start half a millimetre off the axial stack's lattice
    assert union.shape == (32, 43, 37)
    assert np.allclose(union.affine[:3, 3], ORIGIN - [0, 1, 1])
    assert np.allclose(common_grid(shapes, affines, spacing=2.0).spacing, 2.0)
    # a coronal reference: the grid's axes are the coronal stack's
    grid_c = common_grid(shapes, affines, reference=1)
    assert np.allclose(grid_c.affine[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    assert grid_c.shape == (30, 24, 28)


def test_common_grid_is_cut_to_what_every_moved_stack_covers():
    from medsr.fusion.grid import covered_part

    def box(first, shape, spacing):  # a stack's (shape, affine) on the truth's axes
        a = np.diag([*spacing, 1.0])
        a[:3, 3] = ORIGIN + np.asarray(first, dtype=np.float64)
        return shape, a

    stacks = [box((0, 0, 1.5), (40, 40, 10), (1, 1, 4)),     # axial, all of 40 mm
              box((0, 11.5, 0), (40, 5, 40), (1, 4, 1)),     # coronal, y 10..30 only
              box((11.5, 0, 0), (5, 40, 40), (4, 1, 1))]     # sagittal, x 10..30 only
    shapes, affines = [s for s, _ in stacks], [a for _, a in stacks]
    grid = common_grid(shapes, affines)
    same = covered_part(grid, shapes, affines, [np.eye(4)] * 3)
    assert grid.shape == (20, 20, 40) and same.shape == grid.shape
    assert np.allclose(same.affine, grid.affine)
    centre = centre_of((40, 40, 40), truth_affine())
    moved = [np.eye(4), np.eye(4), rigid((0, 0, 10), (0, 0, 0), centre)]  # 10° about z
    loose = common_grid(shapes, affines, transforms=moved)
    tight = covered_part(loose, shapes, affines, moved)
    # the sagittal box's corners that stick out along x lie where the coronal stack is not
    assert (loose.shape[0], tight.shape[0]) == (26, 24)  # x 10..30, ±10·tan 10° at y 10..30
    assert tight.shape[1:] == loose.shape[1:]
    assert np.allclose(tight.affine[:3, :3], loose.affine[:3, :3])
    # a stack moved 1 mm up leaves the first millimetre uncovered: the cut keeps the
    # reference's first 4 mm slice whole rather than drop it from the fit
    up = [np.eye(4), np.eye(4), np.eye(4)]
    up[1][2, 3] = 1.0
    grid = common_grid(shapes, affines)
    kept = covered_part(grid, shapes, affines, up)
    assert kept.shape == grid.shape and np.allclose(kept.affine, grid.affine)


def test_grid_refuses_fields_of_view_that_do_not_overlap():
    x = phantom(SHAPE)
    a = thick_stack(x, truth_affine(), 2, 4)
    far = truth_affine()
    far[:3, 3] += [0, 200, 0]
    b = thick_stack(x, far, 1, 4)
    with pytest.raises(MedsrError, match="do not overlap"):
        common_grid([a[0].shape, b[0].shape], [a[1], b[1]], names=["ax", "cor"])
    assert common_grid([a[0].shape, b[0].shape], [a[1], b[1]], extent="union").shape[1] > 200


# the operators --------------------------------------------------------------------------------
def test_operator_of_an_aligned_stack_is_its_slice_profile_exactly():
    x = phantom(SHAPE).astype(np.float64)
    grid = Grid(SHAPE, truth_affine())
    axial_lr, axial_affine = thick_stack(x, truth_affine(), 2, 4)
    op = StackOperator(axial_lr.shape, axial_affine, grid, dtype=torch.float64)
    assert op.factors == (1, 1, 4)
    assert np.allclose(op.forward(torch.from_numpy(x)).numpy(), axial_lr, atol=1e-3)
    expected = slice_profile(torch.from_numpy(x)[None], 2, 4)[0].numpy()
    assert np.abs(op.forward(torch.from_numpy(x)).numpy() - expected).max() < 1e-9
    assert bool(op.mask.all())
    # coronal, flipped and its axes permuted: the same thick slices, in its own order
    cor = StackOperator((32, 24, 7), coronal_affine(28, 4), grid, dtype=torch.float64)
    flipped = np.ascontiguousarray(x[:, ::-1])
    expected = slice_profile(torch.from_numpy(flipped)[None], 1, 4)[0].permute(0, 2, 1)
    assert np.abs(cor.forward(torch.from_numpy(x)) - expected).max() < 1e-9


def test_operator_of_a_gaussian_or_thicker_profile_matches_the_degradation():
    from medsr.consistency import SliceProfile

    x = phantom(SHAPE).astype(np.float64)
    grid = Grid(SHAPE, truth_affine())
    lr_affine = thick_stack(x, truth_affine(), 2, 4)[1]
    for kind, width in (("gaussian", 1.0), ("box", 1.5)):
        op = StackOperator((32, 28, 6), lr_affine, grid, profile=SliceProfile(kind, width),
                           dtype=torch.float64)
        expected = slice_profile(torch.from_numpy(x)[None], 2, 4, 4 * width, kind)[0]
        assert np.abs(op.forward(torch.from_numpy(x)) - expected).max() < 1e-9


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 4.0), (1.5, 1.5, 3.0), (2.0, 1.0, 5.0)])
def test_operator_adjoint(spacing):
    """<A x, y> = <x, Aᵀ y> for a moved, oblique stack of any spacing."""
    grid = Grid(SHAPE, truth_affine())
    a = np.eye(4)
    a[:3, :3] = rotation((1, -2, 0.5), 20) * np.asarray(spacing)
    a[:3, 3] = centre_of(SHAPE, truth_affine()) - a[:3, :3] @ [5, 5, 2]
    motion = rigid((3, -2, 4), (1.2, -0.7, 0.4), centre_of(SHAPE, truth_affine()))
    op = StackOperator((11, 12, 5), a, grid, motion, dtype=torch.float64)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=SHAPE))
    y = torch.from_numpy(rng.normal(size=op.shape))
    left = float(torch.sum(op.forward(x) * y))
    right = float(torch.sum(x * op.adjoint(y)))
    assert abs(left - right) <= 1e-10 * abs(left)
    assert 0 < float(op.mask.float().mean()) <= 1


def test_operator_slabs_give_the_whole_volume(monkeypatch):
    from medsr.fusion import operators

    grid = Grid(SHAPE, truth_affine())
    affine = thick_stack(phantom(SHAPE), truth_affine(), 1, 4)[1]
    motion = rigid((2, 1, -3), (0.5, 0.2, -0.3), centre_of(SHAPE, truth_affine()))
    x = torch.from_numpy(phantom(SHAPE))
    y = torch.rand((32, 7, 24))
    whole = StackOperator((32, 7, 24), affine, grid, motion)
    assert len(whole.slabs()) == 1
    expected = whole.forward(x), whole.adjoint(y)
    monkeypatch.setattr(operators, "SLAB_POINTS", 500)
    sliced = StackOperator((32, 7, 24), affine, grid, motion)
    assert len(sliced.slabs()) > 5
    assert torch.allclose(sliced.forward(x), expected[0], atol=1e-3)
    assert torch.allclose(sliced.adjoint(y), expected[1], atol=1e-5)


def test_laplacian_is_symmetric_and_kills_constants():
    rng = np.random.default_rng(1)
    u, v = (torch.from_numpy(rng.normal(size=(5, 6, 7))) for _ in range(2))
    assert abs(float(torch.sum(laplacian(u) * v) - torch.sum(u * laplacian(v)))) < 1e-9
    assert float(laplacian(torch.ones(4, 5, 6)).abs().max()) == 0


# the joint solve ------------------------------------------------------------------------------
def _three_stacks(x: np.ndarray, motions=(None, None, None)):
    return [thick_stack(x, truth_affine(), axis, 4, m) for axis, m in zip((2, 1, 0), motions)]


def test_joint_solve_reproduces_every_stack_and_beats_each_bspline():
    from medsr.metrics import psnr

    x = phantom(SHAPE)
    stacks = _three_stacks(x)
    grid = common_grid([s.shape for s, _ in stacks], [a for _, a in stacks])
    assert grid.shape == SHAPE and np.allclose(grid.affine, truth_affine())
    ops = [StackOperator(s.shape, a, grid) for s, a in stacks]
    splines = [resample_onto(s, a, grid) for s, a in stacks]
    start = torch.from_numpy(np.mean(splines, axis=0))
    fused, info = solve(ops, [torch.from_numpy(s) for s, _ in stacks], start=start,
                        smooth=1e-3, iterations=200, tol=1e-6)
    peak = float(x.max() - x.min())
    for op, (s, _) in zip(ops, stacks):  # consistency: exact but for the mild regulariser
        assert psnr(op.forward(fused).numpy(), s, peak) > 55
    assert max(info.residual_rms) < 1e-3 * peak < min(info.start_rms)
    best = max(psnr(b, x, peak) for b in splines)
    assert psnr(fused.numpy(), x, peak) > best + 4  # 28.1 against 23.1 dB


# registration ---------------------------------------------------------------------------------
def _frames(array: np.ndarray, affine: np.ndarray, name: str):
    from medsr.io import SourceInfo, make_frames

    return make_frames(array, affine, SourceInfo("nifti", f"/data/{name}.nii.gz", "float32",
                                                 "MR"))


def _moved_stacks(x: np.ndarray, motions):
    names = ("ax", "cor", "sag")
    return [_frames(*thick_stack(x, truth_affine(), axis, 3, m), name)
            for axis, m, name in zip((2, 1, 0), motions, names)]


def _rotation_error(found: np.ndarray, true: np.ndarray, centre: np.ndarray
                    ) -> tuple[float, float]:
    err = np.linalg.inv(true) @ found
    degrees = np.degrees(np.arccos(np.clip((np.trace(err[:3, :3]) - 1) / 2, -1, 1)))
    return float(degrees), float(np.linalg.norm(err[:3, :3] @ centre + err[:3, 3] - centre))


def test_registration_recovers_a_known_rigid_motion(caplog):
    from medsr.fusion.fuse import fuse

    x = blobs((64, 60, 57))
    centre = centre_of(x.shape, truth_affine())
    motions = [None, rigid((3.0, -2.0, 2.5), (1.5, -2.0, 1.0), centre),
               rigid((-2.5, 2.0, -3.0), (-2.0, 1.0, 2.5), centre)]
    with caplog.at_level("INFO", logger="medsr"):
        out = fuse(_moved_stacks(x, motions), prior="none", iterations=5)
    records = out.meta["medsr_fuse"]["stacks"]
    assert records[0]["registration"] == {"matrix_ras": np.eye(4).tolist(), "reference": True}
    for record, motion in zip(records[1:], motions[1:]):
        reg = record["registration"]
        degrees, mm = _rotation_error(np.asarray(reg["matrix_ras"]), motion, centre)
        assert degrees < 0.3 and mm < 0.3, (record["name"], degrees, mm)
        assert 4 < reg["rotation_deg"] < 5 and reg["correlation"] > reg["correlation_before"]
        assert f"{record['name']}: registered to ax.nii.gz: rotation" in caplog.text
    assert record["left_out"] is None


def test_a_stack_that_does_not_register_is_left_out_with_one_line(caplog):
    from medsr.fusion.fuse import fuse

    x = blobs((48, 45, 42))
    stacks = _moved_stacks(x, [None, None, None])
    other = blobs((48, 45, 42), seed=9)  # another subject where the sagittal stack should be
    stacks[2] = _frames(*thick_stack(other[::-1].copy(), truth_affine(), 0, 3), "sag")
    with caplog.at_level("WARNING", logger="medsr"):
        out = fuse(stacks, prior="none", iterations=5)
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("sag.nii.gz left out: it does not register")
    assert "\n" not in lines[0]
    records = out.meta["medsr_fuse"]["stacks"]
    assert records[2]["left_out"].startswith("it does not register")
    assert records[1]["left_out"] is None and "consistency_psnr" in records[1]
    assert out.meta["medsr_method"] == "fuse 2 stacks, no prior"
    with pytest.raises(MedsrError, match="fewer than two stacks are left"):
        fuse([stacks[0], stacks[2]], prior="none", iterations=5)



def test_a_stack_that_disagrees_with_the_others_beyond_noise_is_left_out(caplog):
    """Another subject's coronal stack beside three of one subject, headers trusted: the
    joint solve cannot reproduce it; fused without it the others predict it far beyond
    noise, so it is left out with one line and the three are fused."""
    from medsr.fusion.fuse import fuse

    rng = np.random.default_rng(0)
    x, other = blobs((48, 45, 42)), blobs((48, 45, 42), seed=9)
    stacks = [*_moved_stacks(x, [None, None, None]),
              _frames(*thick_stack(other, truth_affine(), 1, 3), "cor2")]
    for s in stacks:
        s.array[:] += rng.normal(0, 4, s.array.shape).astype(np.float32)
    with caplog.at_level("WARNING", logger="medsr"):
        out = fuse(stacks, prior="none", registration=False)
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert lines == [lines[0]] and "\n" not in lines[0], lines
    assert lines[0].startswith("cor2.nii.gz left out: it disagrees with the others beyond noise")
    records = out.meta["medsr_fuse"]["stacks"]
    assert [r["left_out"] is None for r in records] == [True, True, True, False]
    assert out.meta["medsr_method"] == "fuse 3 stacks, no prior"
    assert all(r["residual_over_noise"] < 1.5 for r in records[:3])
    # three stacks of one subject with their noise: none is suspect, all are kept
    out = fuse(stacks[:3], prior="none", registration=False)
    assert all(r["left_out"] is None for r in out.meta["medsr_fuse"]["stacks"])
    # only others whose thick axes point two ways judge a suspect (two coronal stacks are
    # blurred along y together: they would predict an axial one badly however it agrees)
    from medsr.fusion.fuse import _sharp_everywhere, load_stacks

    items = load_stacks(stacks)
    assert _sharp_everywhere(items[:2]) and _sharp_everywhere([items[1], items[3], items[2]])
    assert not _sharp_everywhere([items[1], items[3]])


def test_fuse_help_says_what_its_spacing_is():
    result = run("fuse", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Grid spacing in mm along each array axis of the first stack (instead of " \
        "--isotropic)" in text and "--scale" not in text

# the command line -----------------------------------------------------------------------------
def _write(frames, path):
    from medsr.io import save_volume

    save_volume(frames, path)
    return path


@pytest.fixture
def stack_files(tmp_path):
    x = blobs((48, 45, 42))
    centre = centre_of(x.shape, truth_affine())
    stacks = _moved_stacks(x, [None, rigid((2.0, -1.5, 1.0), (1.0, -1.0, 0.5), centre), None])
    return [_write(s, tmp_path / f"{n}.nii.gz") for s, n in zip(stacks, ("ax", "cor", "sag"))]


def test_cli_fuses_writes_atomically_and_keeps_the_transforms(stack_files, tmp_path):
    import json

    import nibabel as nib

    out = tmp_path / "fused.nii.gz"
    result = run("fuse", *stack_files, "-o", out, "--prior", "none", "--iterations", 5,
                 "--metadata", tmp_path / "fused.json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  ax.nii.gz: reference; re-degraded fused vs stack")
    assert lines[1].startswith("  cor.nii.gz: registered 2.")
    # the moved coronal stack, shifted 1 mm along x, narrows the common extent by a voxel
    assert lines[-1].startswith("3 stacks -> 47×45×42 at 1×1×1 mm (fuse 3 stacks, no prior; 5 "
                                "iterations, the iteration limit;")
    img = nib.load(str(out))
    assert img.shape == (47, 45, 42) and np.allclose(img.affine[:3, :3], np.eye(3))
    assert np.allclose(img.affine[:3, 3], ORIGIN + [1, 0, 0])  # on the axial stack's lattice
    note = bytes(img.header.extensions[0].get_content()).decode()
    assert note.startswith(f"medsr {medsr.__version__} fuse 3 stacks") and "cor.nii.gz 2." in note
    record = json.loads((tmp_path / "fused.json").read_text())
    assert [s["name"] for s in record["stacks"]] == ["ax.nii.gz", "cor.nii.gz", "sag.nii.gz"]
    assert len(record["stacks"][1]["registration"]["matrix_ras"]) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ax.nii.gz", "cor.nii.gz", "sag.nii.gz", "fused.nii.gz", "fused.json"])  # no leftovers
    assert_one_line_error(run("fuse", *stack_files, "-o", out), "exists; pass --force")
    result = run("fuse", *stack_files[:2], "-o", out, "--prior", "none", "--iterations", 2,
                 "--no-register", "--isotropic", 2, "--force")
    assert result.exit_code == 0, result.output
    assert nib.load(str(out)).shape == (24, 22, 21)
    assert "cor.nii.gz: header position" in result.stdout


def test_cli_refuses_bad_input_in_one_line(stack_files, tmp_path):
    import nibabel as nib

    out = tmp_path / "fused.nii.gz"
    assert_one_line_error(run("fuse", stack_files[0], "-o", out), "two stacks or more, got 1")
    far = nib.load(str(stack_files[1]))
    moved = far.affine.copy()
    moved[:3, 3] += [0, 0, 300]
    nib.Nifti1Image(np.asarray(far.dataobj), moved).to_filename(str(tmp_path / "far.nii.gz"))
    assert_one_line_error(run("fuse", stack_files[0], tmp_path / "far.nii.gz", "-o", out),
                          "fields of view do not overlap")
    four = np.stack([np.asarray(nib.load(str(stack_files[1])).dataobj)] * 3, axis=-1)
    nib.Nifti1Image(four, far.affine).to_filename(str(tmp_path / "4d.nii.gz"))
    assert_one_line_error(run("fuse", stack_files[0], tmp_path / "4d.nii.gz", "-o", out),
                          "4d.nii.gz is 4D (3 volumes")
    assert_one_line_error(run("fuse", *stack_files, "-o", tmp_path / "x.txt"),
                          "cannot tell the output format")
    assert_one_line_error(run("fuse", *stack_files, "-o", stack_files[0], "--force"),
                          "would overwrite the input")
    assert not out.exists()


def test_api_fuse_is_exported_and_refuses_one_stack(stack_files):
    import medsr

    with pytest.raises(MedsrError, match="two stacks or more, got 1"):
        medsr.fuse(stack_files[0])
    with pytest.raises(MedsrError, match="unknown prior"):
        medsr.fuse(stack_files, prior="tv")
    with pytest.raises(MedsrError, match="unknown extent"):
        medsr.fuse(stack_files, extent="all")
    out = medsr.fuse(stack_files, prior="none", iterations=3, registration=False)
    assert tuple(out.shape) == (1, 48, 45, 42) and "medsr_fuse" in out.meta


def test_a_stack_on_grid_voxels_is_gathered_as_grid_sample_would():
    """The gather path of a stack that was not moved equals trilinear sampling (and its
    adjoint), at the grid's edges too (a stack larger than the grid)."""
    grid = Grid((30, 26, 24), truth_affine() @ np.array(
        [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    x = torch.from_numpy(phantom((30, 26, 24)).astype(np.float64))
    for affine, shape in ((thick_stack(phantom(SHAPE), truth_affine(), 2, 4)[1], (32, 28, 6)),
                          (coronal_affine(28, 4), (32, 24, 7))):
        op = StackOperator(shape, affine, grid, dtype=torch.float64)
        assert op._gather is not None
        sampled = StackOperator(shape, affine, grid, dtype=torch.float64)
        sampled._gather, sampled.slab_axis = None, None
        y = torch.rand(shape, dtype=torch.float64)
        assert torch.allclose(op.forward(x), sampled.forward(x), atol=1e-9)
        assert torch.allclose(op.adjoint(y), sampled.adjoint(y), atol=1e-9)
        assert torch.equal(op.mask, sampled.mask) and not bool(op.mask.all())


def test_report_shows_stacks_fused_views_residuals_and_registration(stack_files, tmp_path):
    import re

    page = tmp_path / "fused.html"
    result = run("fuse", *stack_files, "-o", tmp_path / "fused.nii.gz", "--prior", "none",
                 "--iterations", 5, "--report", page)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(f"report -> {page}")
    html = page.read_text(encoding="utf-8")
    assert html.count('data-row="fused"') == 1
    for name in ("ax.nii.gz", "cor.nii.gz", "sag.nii.gz"):
        assert f'data-row="stack:{name}"' in html and f'data-column="residual:{name}"' in html
        assert f'<tr data-stack="{name}">' in html
    assert html.count("<img") == 3 + 3 * 3 + 3 and "http" not in html.replace(
        'content="width=device-width', "")
    moved = re.search(r'<tr data-stack="cor.nii.gz">(.*?)</tr>', html).group(1)
    assert "2." in moved and "°" in moved and "kept" in moved
    assert 'data-fact="solve"' in html and 'data-fact="peak_memory"' in html
    assert_one_line_error(run("fuse", *stack_files, "-o", tmp_path / "x.nii.gz", "--report",
                              page), "exists; pass --force")


def test_learned_prior_starts_from_the_stacks_default_model_outputs():
    """The learned prior: each stack upscaled alone by the default model (cropped to the
    grid), carried onto it; the joint solve then reproduces every stack within its noise."""
    from medsr.fusion.fuse import fuse

    x = blobs((48, 45, 42))
    out = fuse(_moved_stacks(x, [None, None, None]), prior="learned", registration=False,
               iterations=10)
    records = out.meta["medsr_fuse"]["stacks"]
    assert out.meta["medsr_method"] == "fuse 3 stacks, learned prior"
    for r in records:
        assert r["upscaled_by"] in ("default", "bspline")
        assert r["consistency_psnr"] > r["consistency_psnr_start"]
        assert r["residual_over_noise"] < 2.0 or r["consistency_psnr"] > 45
