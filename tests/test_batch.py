"""``medsr batch`` / ``medsr.batch.upscale_tree`` on a real local Dask scheduler and workers."""

from __future__ import annotations

import csv
import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import AFFINES, phantom
from test_dicom import GEOMETRIES, write_series
from typer.testing import CliRunner

import medsr
from medsr.geometry import flip_lps_ras, target_grid

distributed = pytest.importorskip("distributed")

from medsr.batch import COLUMNS, discover, upscale_tree
from medsr.batch.manifest import Manifest
from medsr.cli import app

SCALE = (1, 1, 3)
runner = CliRunner()


@pytest.fixture(scope="module")
def client():
    """One real scheduler and two worker processes on 127.0.0.1 for the whole module."""
    with distributed.LocalCluster(host="127.0.0.1", processes=True, n_workers=2,
                                  threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


def write_nifti(path, data, affine, tr=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        zooms = img.header.get_zooms()
        img.header.set_zooms((*zooms[:3], tr))
    img.to_filename(str(path))
    return path


def build_study(root):
    """Real and broken inputs: NIfTI + sidecar, 4D NIfTI, DICOM series, truncated, junk."""
    t1 = np.rint(phantom((12, 10, 5))).astype(np.int16)
    write_nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", t1, AFFINES["oblique"])
    (root / "sub-01/anat/sub-01_T1w.json").write_text(json.dumps({"EchoTime": 0.003}))
    bold = np.stack([phantom((8, 7, 4), seed=t) for t in range(3)], axis=-1)
    write_nifti(root / "sub-01/func/sub-01_bold.nii.gz", bold, AFFINES["anisotropic"], tr=2.0)
    stored = np.random.default_rng(1).integers(0, 4000, (7, 6, 5)).astype(np.uint16)
    write_series(root / "sub-02/dicom", stored, GEOMETRIES["oblique"], seed=3)
    (root / "sub-03/mixed").mkdir(parents=True)
    for desc, number in (("t1", 3), ("t2", 4)):  # two series in one folder
        for f in write_series(root / "tmp", stored, GEOMETRIES["anisotropic"],
                              description=desc, seed=number):
            ds = pydicom.dcmread(f)
            ds.SeriesNumber = number
            ds.save_as(root / "sub-03/mixed" / f"{desc}_{f.name}")
        shutil.rmtree(root / "tmp")
    good = (root / "sub-01/anat/sub-01_T1w.nii.gz").read_bytes()
    (root / "broken").mkdir()
    (root / "broken/truncated.nii.gz").write_bytes(good[: len(good) // 2])
    write_nifti(root / "broken/flat.nii.gz", t1[:, :, :1], AFFINES["oblique"])  # 1 slice
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    (root / "README.txt").write_text("a study")
    (root / ".hidden.nii.gz").write_bytes(good)
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
            and p.name != "manifest.csv"}


@pytest.fixture(scope="module")
def study(tmp_path_factory, client):
    root = build_study(tmp_path_factory.mktemp("batch") / "study")
    out = root.parent / "study_sr"
    rows = upscale_tree(root, out, client=client, method="bspline", scale=SCALE,
                        progress=False)
    return root, out, rows


def by_input(rows):
    return {(r["input"], r["series_uid"]): r for r in rows}


# ----------------------------------------------------------------------------------- discovery
def test_discovery_skips_sidecars_hidden_and_junk_and_names_series(tmp_path, caplog):
    root = build_study(tmp_path / "study")
    with caplog.at_level(logging.INFO, logger="medsr"):
        items = discover(root, tmp_path / "out")
    rels = sorted({i.rel for i in items})
    assert rels == ["broken/flat.nii.gz", "broken/truncated.nii.gz",
                    "sub-01/anat/sub-01_T1w.nii.gz",
                    "sub-01/func/sub-01_bold.nii.gz", "sub-02/dicom", "sub-03/mixed"]
    for name in ("README.txt", "participants.tsv", ".hidden.nii.gz", "sub-01_T1w.json"):
        assert name in caplog.text
    outputs = {i.output.relative_to(tmp_path / "out").as_posix() for i in items}
    assert {"sub-01/anat/sub-01_T1w_sr.nii.gz", "sub-02/dicom_sr", "sub-03/mixed_s3_sr",
            "sub-03/mixed_s4_sr", "broken/truncated_sr.nii.gz"} <= outputs
    t1 = next(i for i in items if i.rel.endswith("T1w.nii.gz"))
    assert [p.name for p in t1.sidecars] == ["sub-01_T1w.json"]
    assert len([i for i in items if i.rel == "sub-03/mixed"]) == 2

    only = discover(root, tmp_path / "out", include=["sub-0*"], exclude=["*func*", "*mixed"])
    assert sorted(i.rel for i in only) == ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/dicom"]
    nifti = discover(root, tmp_path / "out", fmt="nifti", include=["sub-02/*"])
    assert nifti[0].output.name == "dicom_sr.nii.gz"


def test_root_may_be_a_series_folder_or_one_file(tmp_path):
    stored = np.random.default_rng(1).integers(0, 4000, (7, 6, 5)).astype(np.uint16)
    write_series(tmp_path / "CT1", stored, GEOMETRIES["anisotropic"])
    (item,) = discover(tmp_path / "CT1", tmp_path / "out")
    assert item.rel == "." and item.output == tmp_path / "out/CT1_sr" and item.series_uid
    write_nifti(tmp_path / "x.nii.gz", phantom((6, 6, 4)), np.eye(4))
    (tmp_path / "x.json").write_text("{}")
    (item,) = discover(tmp_path / "x.nii.gz", tmp_path / "out", fmt="nrrd")
    assert item.output == tmp_path / "out/x_sr.nrrd" and item.sidecars == (tmp_path / "x.json",)


def test_output_inside_the_tree_is_not_an_input_and_collisions_are_errors(tmp_path):
    root = tmp_path / "study"
    data = phantom((6, 6, 4))
    write_nifti(root / "a.nii.gz", data, np.eye(4))
    write_nifti(root / "a.nii", data, np.eye(4))
    write_nifti(root / "derivatives/old_sr.nii.gz", data, np.eye(4))
    items = discover(root, root / "derivatives", fmt="nifti")
    assert [i.rel for i in items] == ["a.nii", "a.nii.gz"]
    assert items[0].problem is None and "also the output of a.nii" in items[1].problem


# ----------------------------------------------------------------------------------- a run
def test_manifest_outputs_and_grids(study):
    _, out, rows = study
    assert rows == read_csv(out / "manifest.csv")
    assert set(COLUMNS) <= set(rows[0])
    assert {"input", "output", "status", "method", "seconds", "error", "shape_in",
            "spacing_in", "shape_out", "spacing_out"} <= set(COLUMNS)
    assert len(rows) == 7
    rows_by = by_input(rows)
    t1 = rows_by["sub-01/anat/sub-01_T1w.nii.gz", ""]
    assert t1["status"] == "ok" and t1["method"] == "bspline" and float(t1["seconds"]) > 0
    assert t1["shape_in"] == "12x10x5" and t1["shape_out"] == "12x10x15"
    img = nib.load(out / t1["output"])
    shape, affine, _ = target_grid((12, 10, 5), AFFINES["oblique"], scale=SCALE)
    assert img.shape == tuple(shape) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)

    dicom = rows_by["sub-02/dicom", next(u for i, u in rows_by if i == "sub-02/dicom")]
    assert dicom["status"] == "ok" and dicom["output"] == "sub-02/dicom_sr"
    result = medsr.load_volume(out / "sub-02/dicom_sr")
    shape, affine, _ = target_grid((7, 6, 5), flip_lps_ras(GEOMETRIES["oblique"]), scale=SCALE)
    assert tuple(result.shape) == (1, *shape)
    np.testing.assert_allclose(result.affine.numpy(), affine, atol=1e-3)
    mixed = [r for (i, _), r in rows_by.items() if i == "sub-03/mixed"]
    assert sorted(r["output"] for r in mixed) == ["sub-03/mixed_s3_sr", "sub-03/mixed_s4_sr"]
    assert all(r["status"] == "ok" for r in mixed)

    for name in ("broken/truncated.nii.gz", "broken/flat.nii.gz"):
        bad = rows_by[name, ""]
        assert bad["status"] == "error" and bad["error"] and "\n" not in bad["error"]
        assert not (out / bad["output"]).exists()
    assert "single slice" in rows_by["broken/flat.nii.gz", ""]["error"]  # ×3 along it
    assert not list(out.rglob(".*partial*"))


def test_sidecar_copied_with_a_note(study):
    _, out, _ = study
    meta = json.loads((out / "sub-01/anat/sub-01_T1w_sr.json").read_text())
    assert meta["EchoTime"] == 0.003
    note = meta["MedsrUpscale"]
    assert note["method"] == "bspline" and note["scale"] == [1, 1, 3]
    assert note["version"] == medsr.__version__ and note["shape_out"] == [12, 10, 15]


def test_4d_volume_upscaled_frame_by_frame(study):
    _, out, rows = study
    row = by_input(rows)["sub-01/func/sub-01_bold.nii.gz", ""]
    assert row["status"] == "ok", row["error"]
    img = nib.load(out / row["output"])
    shape, affine, _ = target_grid((8, 7, 4), AFFINES["anisotropic"], scale=SCALE)
    assert img.shape == (*shape, 3) and row["shape_out"] == "8x7x12x3"
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert img.header.get_zooms()[3] == pytest.approx(2.0)


def test_rerun_skips_finished_outputs_and_redoes_only_what_is_missing(study, client):
    root, out, first = study
    before = mtimes(out)
    rows = upscale_tree(root, out, client=client, method="bspline", scale=SCALE,
                        progress=False)
    for row in rows:
        old = by_input(first)[row["input"], row["series_uid"]]
        assert row["status"] == ("skipped" if old["status"] == "ok" else "error")
        if row["status"] == "skipped":
            assert row["shape_out"] == old["shape_out"] and row["method"] == "bspline"
    assert mtimes(out) == before

    (out / "sub-01/anat/sub-01_T1w_sr.nii.gz").unlink()
    shutil.rmtree(out / "sub-02/dicom_sr")
    rows = upscale_tree(root, out, client=client, method="bspline", scale=SCALE,
                        progress=False)
    redone = sorted(r["input"] for r in rows if r["status"] == "ok")
    assert redone == ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/dicom"]
    after = mtimes(out)
    changed = sorted(p.relative_to(out).parts[:2] for p in after
                     if before.get(p) != after[p])
    assert {c[:2] for c in changed} == {("sub-01", "anat"), ("sub-02", "dicom_sr")}
    assert read_csv(out / "manifest.csv") == rows


def test_manifest_is_on_disk_after_every_row(tmp_path):
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.add({"input": "b.nii.gz", "status": "ok", "seconds": 1.5})
    assert read_csv(tmp_path / "manifest.csv")[0]["status"] == "ok"
    manifest.add({"input": "a.nii.gz", "status": "error", "error": "bad"})
    assert len(read_csv(tmp_path / "manifest.csv")) == 2
    manifest.close()
    assert [r["input"] for r in read_csv(tmp_path / "manifest.csv")] == ["a.nii.gz",
                                                                       "b.nii.gz"]


# ----------------------------------------------------------------------------------- CLI
def small_tree(root):
    write_nifti(root / "a/x.nii.gz", phantom((8, 8, 4)), AFFINES["flipped"])
    good = (root / "a/x.nii.gz").read_bytes()
    (root / "b").mkdir()
    (root / "b/y.nii.gz").write_bytes(good[:40])
    return root


def test_cli_on_a_running_scheduler_exits_1_when_an_input_failed(tmp_path, client):
    root = small_tree(tmp_path / "study")
    args = ["batch", str(root), "-o", str(tmp_path / "out"), "--method", "bspline",
            "--scheduler", client.scheduler.address]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 upscaled, 0 skipped, 1 failed" in result.stdout
    assert "error: b/y.nii.gz:" in result.stderr and "Traceback" not in result.output
    assert (tmp_path / "out/a/x_sr.nii.gz").is_file()
    result = runner.invoke(app, [*args, "--include", "a/*"])
    assert result.exit_code == 0 and "0 upscaled, 1 skipped, 0 failed" in result.stdout
    rows = read_csv(tmp_path / "out/manifest.csv")  # b/y.nii.gz left out, its row kept
    assert [(r["input"], r["status"]) for r in rows] == [("a/x.nii.gz", "skipped"),
                                                          ("b/y.nii.gz", "error")]
    (root / "b/y.nii.gz").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 upscaled, 1 skipped, 0 failed" in result.stdout
    assert len(read_csv(tmp_path / "out/manifest.csv")) == 1


def test_uncertainty_map_beside_the_output(tmp_path, client):
    write_nifti(tmp_path / "study/x.nii.gz", phantom((12, 12, 5)), np.diag([1, 1, 3, 1.0]))
    rows = upscale_tree(tmp_path / "study", tmp_path / "out", client=client, method="default",
                        modality="mr", uncertainty=True, progress=False)
    assert rows[0]["status"] == "ok", rows[0]["error"]
    assert rows[0]["uncertainty"] == "x_sr_sd.nii.gz"
    sd = nib.load(tmp_path / "out/x_sr_sd.nii.gz")
    assert sd.shape == nib.load(tmp_path / "out/x_sr.nii.gz").shape
    assert sd.get_data_dtype() == np.float32


def test_cli_local_cluster(tmp_path):
    root = small_tree(tmp_path / "study")
    (root / "b/y.nii.gz").unlink()
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"),
                                 "--workers", "1", "--method", "bspline", "--format", "mha"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out/a/x_sr.mha").is_file()
    assert read_csv(tmp_path / "out/manifest.csv")[0]["status"] == "ok"


@pytest.mark.parametrize("args, text", [
    (["missing", "-o", "out"], "no such file"),
    (["{root}", "-o", "out", "--workers", "0"], "--workers"),
    (["{root}", "-o", "out", "--format", "nifti", "--dtype", "int3"], "int3"),
    (["{root}", "-o", "out", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
     "only one of"),
    (["{root}", "-o", "out", "--jobqueue", "slurm"], "sbatch not found"),
])
def test_cli_bad_requests_are_one_error_line(tmp_path, monkeypatch, args, text):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, nothing submitted
    root = small_tree(tmp_path / "study")
    args = [a.format(root=root) if a != "out" else str(tmp_path / "out") for a in args]
    result = runner.invoke(app, ["batch", *[str(tmp_path / a) if a == "missing" else a
                                            for a in args]])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], lines


# ----------------------------------------------------------------------------------- job queues
def test_slurm_and_pbs_job_scripts_without_submitting():
    pytest.importorskip("dask_jobqueue")
    from medsr.batch import pbs_cluster, slurm_cluster

    with slurm_cluster(cores=8, memory="32GB", gpus=1, queue="gpu", account="lab",
                       walltime="01:00:00", job_script_prologue=["module load cuda"],
                       scheduler_options={"host": "127.0.0.1"}) as cluster:
        script = cluster.job_script()
        assert cluster.workers == {}
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH -t 01:00:00", "#SBATCH --gres=gpu:1",
                 "export MEDSR_THREADS=8", "module load cuda"):
        assert line in script, script
    assert "--nthreads 1" in script and "tcp://127.0.0.1:" in script

    with pbs_cluster(cores=4, memory="8GB", gpus=2,
                     scheduler_options={"host": "127.0.0.1"}) as cluster:
        script = cluster.job_script()
    assert "#PBS -l select=1:ncpus=4:mem=8GB:ngpus=2" in script
    assert "export MEDSR_THREADS=4" in script


def test_batch_report_has_a_row_per_input_and_links_each_page(client, tmp_path):
    import html

    from test_report import Page

    root = tmp_path / "study"
    t1 = np.rint(phantom((12, 10, 5))).astype(np.int16)
    write_nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", t1, AFFINES["oblique"])
    write_nifti(root / "sub-02/anat/sub-02_T1w.nii.gz", t1, AFFINES["flipped"])
    good = (root / "sub-01/anat/sub-01_T1w.nii.gz").read_bytes()
    (root / "broken").mkdir()
    (root / "broken/truncated.nii.gz").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    rows = upscale_tree(root, out, client=client, progress=False, report=True, scale=SCALE,
                        method="bspline")
    assert [r["status"] for r in rows] == ["error", "ok", "ok"]
    text = (out / "report.html").read_text()
    page = Page(text)
    assert sorted(page.links) == ["sub-01/anat/sub-01_T1w_sr.html",
                                  "sub-02/anat/sub-02_T1w_sr.html"]
    for link in page.links:
        scan_page = Page((out / link).read_text())
        assert scan_page.facts["method"]["text"] == "bspline"
    assert rows[0]["error"] and html.escape(rows[0]["error"]) in text
    thumbs = [i for i in page.images if i["src"].startswith("data:image/png;base64,")]
    assert len(thumbs) == 2
    # a rerun skips the done inputs and still links their pages
    rows = upscale_tree(root, out, client=client, progress=False, report=True, scale=SCALE,
                        method="bspline")
    assert [r["status"] for r in rows] == ["error", "skipped", "skipped"]
    again = Page((out / "report.html").read_text())
    assert sorted(again.links) == sorted(page.links)
    assert [i["src"] for i in again.images] == [i["src"] for i in page.images]
