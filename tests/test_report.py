"""Visual QC reports (``medsr.report``): orientation on screen, the numbers on the page
against the volumes, self-contained pages, and the ``--report`` / ``medsr report`` commands."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import AFFINES, make_affine, phantom, rotation, write_phantom_nifti
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.consistency import SliceProfile, redegradation_psnr
from medsr.io import make_volume
from medsr.io.meta import SourceInfo
from medsr.metrics import otsu_threshold
from medsr.report import build_report, write_report
from medsr.report.orientation import direction_label, orientation_code, views
from medsr.report.sampling import edge_profile, sample_input
from medsr.report.study import StudyReport

runner = CliRunner()
SCALE = (1, 1, 3)


class Page(HTMLParser):
    """Images, links, facts (``data-fact`` rows) and edge labels of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.links: list[str] = []
        self.facts: dict[str, dict] = {}
        self.labels: list[dict] = []
        self._fact = self._label = None
        self._context: dict = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "data-view" in a:
            self._context = {"view": a["data-view"], "location": a["data-location"]}
        if tag == "figure" and "data-column" in a:
            self._context = {**self._context, "column": a["data-column"]}
        if tag == "img":
            self.images.append({**a, **self._context})
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "tr" and "data-fact" in a:
            self._fact = a["data-fact"]
        if tag == "td" and self._fact:
            self.facts[self._fact] = {"value": a.get("data-value"), "text": ""}
        if tag == "span" and "data-edge" in a:
            self._label = {**self._context, "edge": a["data-edge"], "text": ""}

    def handle_endtag(self, tag):
        if tag == "tr":
            self._fact = None
        if tag == "span" and self._label is not None:
            self.labels.append(self._label)
            self._label = None

    def handle_data(self, data):
        if self._fact and self._fact in self.facts:
            self.facts[self._fact]["text"] += data
        if self._label is not None:
            self._label["text"] += data


def volume(data, affine, path="scan.nii.gz"):
    return make_volume(np.asarray(data, np.float32), affine, SourceInfo("nifti", path, "float32"))


def world(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


# ---- orientation -------------------------------------------------------------------------

def test_direction_labels_follow_ras():
    assert [direction_label(v) for v in np.eye(3)] == ["R", "A", "S"]
    assert [direction_label(-v) for v in np.eye(3)] == ["L", "P", "I"]
    t = np.radians(30)
    assert direction_label((-np.cos(t), -np.sin(t), 0)) == "LP"
    assert direction_label((0.99, 0.05, 0.0)) == "R"  # slight obliquity: the main letter
    assert orientation_code(np.diag([-1.0, -1.0, 1.0, 1.0])) == "LPS"


def test_views_are_radiological_for_plain_and_flipped_volumes():
    for affine in (np.eye(4), np.diag([-1.0, 1.0, -1.0, 1.0]), np.diag([-2.0, -1.0, 3.0, 1.0])):
        shown = views(affine)
        assert shown["axial"].labels == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
        assert shown["coronal"].labels == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
        assert shown["sagittal"].labels == {"left": "A", "right": "P", "top": "S",
                                            "bottom": "I"}


def test_oblique_labels_name_both_directions():
    affine = make_affine(rotation((0, 0, 1), 30.0), (1, 1, 1), (0, 0, 0))
    assert views(affine)["axial"].labels == {"left": "RA", "right": "LP", "top": "AL",
                                             "bottom": "PR"}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_a_marker_shows_on_the_side_its_label_names(name):
    """A bright half-space towards each patient direction lands on the screen edge labelled
    with that direction's letter, in every view of every geometry."""
    affine = AFFINES[name]
    shape = (20, 18, 16)
    pos = world(shape, affine)
    centre = pos.reshape(-1, 3).mean(axis=0)
    for view in views(affine).values():
        index = shape[view.fixed] // 2
        for w, letters in enumerate((("R", "L"), ("A", "P"), ("S", "I"))):
            for sign, letter in ((1, letters[0]), (-1, letters[1])):
                offset = sign * (pos[..., w] - centre[w])
                marker = (offset > 0.3 * offset.max()).astype(np.float32)
                image = view.plane(marker, index)
                if image.sum() < 3 or letter not in "".join(view.labels.values()):
                    continue  # the normal's direction: not shown in this plane
                rows, cols = np.nonzero(image)
                dy = rows.mean() / (image.shape[0] - 1) - 0.5
                dx = cols.mean() / (image.shape[1] - 1) - 0.5
                edge = (("right" if dx > 0 else "left") if abs(dx) > abs(dy)
                        else ("bottom" if dy > 0 else "top"))
                assert letter in view.labels[edge], (name, view.name, letter, view.labels)


# ---- sampling ----------------------------------------------------------------------------

def test_input_on_the_output_grid_repeats_the_thick_slices_and_matches_bspline():
    data = phantom((12, 10, 6))
    vol = volume(data, AFFINES["oblique"])
    sr = medsr.upscale(vol, SCALE, method="bspline")
    out_affine = np.asarray(sr.affine)
    nearest = sample_input(data, AFFINES["oblique"], out_affine, (0, 0, 0), sr.shape[1:],
                           "nearest")
    np.testing.assert_array_equal(nearest, np.repeat(data, 3, axis=2))
    spline = sample_input(data, AFFINES["oblique"], out_affine, (0, 0, 0), sr.shape[1:])
    inner = (slice(None), slice(None), slice(3, -3))
    np.testing.assert_allclose(spline[inner], sr[0].numpy()[inner], atol=0.05 * np.ptp(data))


def test_the_profile_crosses_the_strongest_edge():
    data = np.zeros((9, 9, 8), np.float32)
    data[:, :, 5:] = 1000.0  # one edge, between slices 4 and 5
    affine = make_affine(np.eye(3), (1, 1, 4), (0, 0, 0))
    sr = medsr.upscale(volume(data, affine), (1, 1, 4), method="linear")
    prof = edge_profile(data, affine, sr[0].numpy(), np.asarray(sr.affine))
    assert prof.axis == 2
    assert prof.input_values.min() == 0 and prof.input_values.max() == 1000
    # the measured samples sit at the input slice centres, on the output's mm scale
    np.testing.assert_allclose(np.diff(prof.input_positions), 4.0)
    assert prof.positions[0] <= prof.input_positions[0] + 4
    assert prof.positions.size == prof.output.size == prof.bspline.size


# ---- the page ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upscaled():
    data = phantom((16, 14, 6))
    vol = volume(data, AFFINES["oblique"])
    sr = medsr.upscale(vol, SCALE, method="bspline")
    sd = volume(np.abs(np.random.default_rng(0).normal(size=sr.shape[1:])) * 5 + 1,
                np.asarray(sr.affine))
    return vol, sr, sd


def test_the_numbers_on_the_page_are_the_volumes(upscaled):
    vol, sr, sd = upscaled
    text, summary = build_report(vol, sr, sd)
    page = Page(text)
    assert page.facts["shape_input"]["value"] == "16x14x6"
    assert page.facts["shape_output"]["value"] == "16x14x18"
    spacing_out = [float(v) for v in page.facts["spacing_output"]["value"].split()]
    np.testing.assert_allclose(spacing_out, np.linalg.norm(sr.affine[:3, :3], axis=0),
                               rtol=1e-5)
    assert page.facts["orientation_output"]["value"] == orientation_code(sr.affine.numpy())
    assert page.facts["method"]["text"] == "bspline"
    out = sr[0].numpy()
    psnr = redegradation_psnr(out, vol[0].numpy(), 2, 3, SliceProfile("box", 1.0))
    assert float(page.facts["consistency"]["value"]) == pytest.approx(psnr, rel=1e-6)
    assert summary["consistency_db"] == pytest.approx(psnr, rel=1e-6)
    sd_array = sd[0].numpy()
    body = out > otsu_threshold(out)
    mean_sd = float(sd_array[body].mean(dtype=np.float64))
    assert float(page.facts["mean_sd"]["value"]) == pytest.approx(mean_sd, rel=1e-5)
    assert float(page.facts["max_sd"]["value"]) == pytest.approx(float(sd_array.max()))
    assert page.facts["version"]["text"] == medsr.__version__


def test_the_page_is_self_contained(upscaled, tmp_path):
    vol, sr, sd = upscaled
    path = tmp_path / "r.html"
    write_report(path, vol, sr, sd)
    text = path.read_text()
    page = Page(text)
    from PIL import Image

    # 2 locations x 3 views x 4 columns, 2 colour bars, the profile
    assert len(page.images) == 24 + 2 + 1
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).verify()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "<script" not in text
    columns = {(i["location"], i["view"], i["column"]) for i in page.images if "column" in i}
    assert len(columns) == 24
    shown = views(sr.affine.numpy())
    assert len(page.labels) == 24 * 4
    for lab in page.labels:
        assert lab["text"] == shown[lab["view"]].labels[lab["edge"]]


def test_learned_run_facts(tmp_path):
    """A learned method's page has its model, slice profile, consistency and coverage."""
    data = phantom((24, 20, 6))
    affine = make_affine(np.eye(3), (1.0, 1.0, 3.0), (0, 0, 0))
    path = tmp_path / "r.html"
    sr, _ = medsr.upscale(volume(data, affine), SCALE, method="default", modality="MR",
                           uncertainty=True, report=path)
    page = Page(path.read_text())
    assert page.facts["method"]["text"] == sr.meta["medsr_method"]
    assert "lrrefiner" in page.facts["model"]["text"]
    assert float(page.facts["consistency"]["value"]) == pytest.approx(
        sr.meta["medsr_consistency_psnr"])
    coverage = sr.meta["medsr_uncertainty"]["coverage"]
    assert 0.9 <= coverage <= 1.0
    assert float(page.facts["coverage"]["value"]) == pytest.approx(coverage)
    assert float(page.facts["seconds"]["value"]) > 0
    assert int(page.facts["peak_memory"]["value"]) > 0


# ---- commands ----------------------------------------------------------------------------

@pytest.fixture
def scan(tmp_path):
    return write_phantom_nifti(tmp_path / "scan.nii.gz", AFFINES["flipped"])


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_upscale_report_and_report_after_the_fact(scan, tmp_path):
    out, page_path = tmp_path / "scan_sr.nii.gz", tmp_path / "scan.html"
    result = run("upscale", scan, "-o", out, "--scale", *SCALE, "--method", "bspline",
                 "--report", page_path)
    assert result.exit_code == 0, result.output
    assert f"report -> {page_path}" in result.output
    during = Page(page_path.read_text())
    assert during.facts["input_file"]["text"] == "scan.nii.gz"
    assert during.facts["output_file"]["text"] == "scan_sr.nii.gz"
    assert "seconds" in during.facts
    # the same page after the fact, the method read back from the output's header
    result = run("report", out, "--input", scan)
    assert result.exit_code == 0, result.output
    after = Page((tmp_path / "scan_sr.html").read_text())
    assert after.facts["method"]["text"] == "bspline"
    # the same within the int16 rounding of the written output
    assert float(after.facts["consistency"]["value"]) == pytest.approx(
        float(during.facts["consistency"]["value"]), abs=0.05)
    assert "seconds" not in after.facts
    assert [lab["text"] for lab in after.labels] == [lab["text"] for lab in during.labels]


def test_report_mistakes_are_one_line(scan, tmp_path):
    page_path = tmp_path / "r.html"
    page_path.write_text("old")
    for args, text in (
            (("upscale", scan, "--method", "bspline", "--report", page_path), "exists"),
            (("upscale", scan, "--method", "bspline", "--report", tmp_path / "r.txt"),
             ".html"),
            (("report", scan, "--input", scan, "-o", page_path), "exists"),
            (("report", tmp_path / "missing.nii.gz", "--input", scan), "missing")):
        result = run(*args)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], lines
        assert "Traceback" not in result.output
    assert page_path.read_text() == "old"
    assert not (tmp_path / "scan_sr.nii.gz").exists()


def test_study_report_is_true_after_every_row(tmp_path):
    (tmp_path / "a_sr.html").write_text("page")
    study = StudyReport(tmp_path / "report.html", title="study")
    assert "0 inputs" in (tmp_path / "report.html").read_text()
    study.add({"input": "a.nii.gz", "status": "ok", "method": "bspline", "seconds": 2.5,
               "consistency_db": math.inf, "report": "a_sr.html"})
    text = (tmp_path / "report.html").read_text()
    assert "a.nii.gz" in text and 'href="a_sr.html"' in text and "exact" in text
    study.add({"input": "b.nii.gz", "status": "error", "error": "b.nii.gz is truncated"})
    page = Page((tmp_path / "report.html").read_text())
    assert page.links == ["a_sr.html"]
    text = (tmp_path / "report.html").read_text()
    assert "b.nii.gz is truncated" in text and "2 inputs: 1 done, 0 skipped" in text


def test_several_inputs_get_one_page_each(scan, tmp_path):
    other = tmp_path / "other.nii.gz"
    other.write_bytes(scan.read_bytes())
    pages = tmp_path / "pages"
    args = ("upscale", scan, other, "-o", tmp_path / "out", "--scale", *SCALE, "--method",
            "bspline", "--report", pages)
    assert run(*args).exit_code == 0
    assert sorted(p.name for p in pages.iterdir()) == ["other_sr.html", "scan_sr.html"]
    again = run(*args)  # each existing page is one error line; the others go on
    assert again.exit_code == 1 and again.stderr.count("error:") == 2


def test_a_rerun_keeps_the_pictures_and_numbers_of_skipped_inputs(tmp_path):
    thumb = "data:image/png;base64,iVBORw0KGgo="
    first = StudyReport(tmp_path / "report.html")
    first.add({"input": "a.nii.gz", "status": "ok", "method": "default", "thumbnail": thumb,
               "consistency_db": 157.5, "mean_sd": 12.5, "seconds": 30.0})
    again = StudyReport(tmp_path / "report.html")
    again.add({"input": "a.nii.gz", "status": "skipped", "seconds": 0})
    row = again.rows[("a.nii.gz", "")]
    assert row["thumbnail"] == thumb and row["consistency_db"] == 157.5
    assert row["status"] == "skipped" and row["seconds"] == 0
    assert thumb in (tmp_path / "report.html").read_text()
