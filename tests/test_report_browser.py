"""The report pages in a real browser: headless Chromium driven by Playwright.

Every image loads, nothing is requested from the network, the console stays clean, the
orientation labels are the affine's for an oblique and a flipped volume (and a marker at the
patient's right shows on the side labelled R), and the study table sorts by a column.
Skipped, with the reason, where Playwright or Chromium is not installed.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from conftest import AFFINES, make_affine, phantom, rotation

import medsr
from medsr.io import make_volume
from medsr.io.meta import SourceInfo
from medsr.report import write_report
from medsr.report.orientation import views
from medsr.report.study import StudyReport

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium to run the browser test (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def open_page(browser, path):
    """The page at ``path`` and what it asked for and complained about."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    seen = {"requests": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    return page, seen


def marked_report(tmp_path, affine, name):
    """A report of a phantom whose patient-right half (world x beyond the centre) is bright."""
    shape = (20, 18, 6)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    x = (idx @ affine[:3, :3].T + affine[:3, 3])[..., 0]
    data = phantom(shape) * 0.3 + 2000.0 * (x > x.mean() + 0.15 * np.ptp(x))
    vol = make_volume(data.astype(np.float32), affine,
                      SourceInfo("nifti", f"{name}.nii.gz", "float32"))
    sr = medsr.upscale(vol, (1, 1, 3), method="bspline")
    path = tmp_path / f"{name}.html"
    write_report(path, vol, sr)
    return path, np.asarray(sr.affine)


@pytest.mark.parametrize("name, affine, axial", [
    ("flipped", AFFINES["flipped"], {"left": "R", "right": "L", "top": "A", "bottom": "P"}),
    ("oblique", make_affine(rotation((0, 0, 1), 30.0), (0.9, 0.9, 3.0), (5.0, -7.0, 2.0)),
     {"left": "RA", "right": "LP", "top": "AL", "bottom": "PR"}),
    ("oblique3d", AFFINES["oblique"], None),
])
def test_scan_report_in_chromium(browser, tmp_path, name, affine, axial):
    path, out_affine = marked_report(tmp_path, affine, name)
    page, seen = open_page(browser, path)
    states = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
    assert len(states) == 3 * 3 + 1 and all(c and w > 0 and h > 0 for c, w, h in states)
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]
    assert seen["errors"] == []
    shown = views(out_affine)
    labels = page.eval_on_selector_all(
        "div.row[data-view] figure[data-column=output] .lab",
        "els => els.map(e => [e.closest('div.row').dataset.view, e.dataset.edge, "
        "e.textContent])")
    assert len(labels) == 12
    for view, edge, text in labels:
        assert text == shown[view].labels[edge]
        if axial is not None and view == "axial":
            assert text == axial[edge]
    # the bright patient-right half is on the screen side whose label says R
    from PIL import Image

    img = page.locator("div.row[data-view=axial][data-location=centre] "
                       "figure[data-column=output] img")
    grey = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("L"), np.float64)
    half = grey.shape[1] // 2
    left_brighter = grey[:, :half].mean() > grey[:, half:].mean()
    assert ("R" in shown["axial"].labels["left"]) == left_brighter
    assert "R" in shown["axial"].labels["left" if left_brighter else "right"]
    page.close()


def test_study_report_sorts_in_chromium(browser, tmp_path):
    study = StudyReport(tmp_path / "report.html", title="study")
    for name, seconds, status in (("a", 3.0, "ok"), ("b", 1.0, "ok"), ("c", None, "error"),
                                  ("d", 2.0, "ok")):
        study.add({"input": f"{name}.nii.gz", "status": status, "seconds": seconds,
                   "error": "truncated" if status == "error" else ""})
    page, seen = open_page(browser, tmp_path / "report.html")

    def order():
        return page.eval_on_selector_all("table.study tbody tr",
                                         "rows => rows.map(r => r.dataset.input)")

    assert order() == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]
    header = page.locator("table.study th", has_text="time (s)")
    header.click()
    assert order() == ["b.nii.gz", "d.nii.gz", "a.nii.gz", "c.nii.gz"]  # blanks last
    header.click()
    assert order()[:3] == ["a.nii.gz", "d.nii.gz", "b.nii.gz"]
    page.locator("table.study th", has_text="status").click()
    assert order()[0] == "c.nii.gz"  # "error" before "ok"
    assert seen["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"])
    page.close()
