"""One scan's visual QC page: the input, its B-spline and the output side by side in three
orthogonal views (through the centre and through the slices of largest uncertainty), the
uncertainty as an overlay with its colour bar, a through-plane profile across an edge, and
the facts (geometry, method, model, slice profile, consistency, uncertainty coverage, time,
memory, version). One self-contained HTML file: images embedded, no script, no network.

Example:
    >>> import medsr
    >>> from medsr.report import write_report
    >>> vol = medsr.load_volume("brain.nrrd")                       # doctest: +SKIP
    >>> sr, sd = medsr.upscale(vol, uncertainty=True)               # doctest: +SKIP
    >>> write_report("brain.html", vol, sr, sd)                     # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from monai.data import MetaTensor

from medsr.report.html import data_uri, esc, page, write_text
from medsr.report.orientation import obliquity_degrees, orientation_code, views
from medsr.report.sampling import edge_profile, input_plane, largest_slice

#: longest side (CSS px) of a displayed plane
DISPLAY_PX = 240
#: voxels sampled for the grey window, body threshold and the colour scale
SAMPLE_VOXELS = 4_000_000
COLUMNS = (("input", "input (nearest)"), ("bspline", "B-spline"), ("output", "output"),
           ("uncertainty", "uncertainty (sd) over output"))


@dataclass
class RunInfo:
    """What only the run that made the output knows (left out of a report made after it).

    Attributes:
        seconds: wall time of the upscaling.
        peak_memory_bytes: the process's peak resident memory (see :func:`peak_memory`).
        input_name, output_name: shown as the scan's name (default: the source paths).
    """

    seconds: float | None = None
    peak_memory_bytes: int | None = None
    input_name: str = ""
    output_name: str = ""


def peak_memory() -> int | None:
    """Peak resident memory of this process so far, bytes (``None`` where unknown)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)
    except (ImportError, OSError, ValueError):
        return None


def _sample(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil((a.size / SAMPLE_VOXELS) ** (1 / 3)))
    return np.asarray(a[::step, ::step, ::step], dtype=np.float32)


def body_mean(sd: np.ndarray, output: np.ndarray) -> float:
    """Mean of ``sd`` over the body: output voxels above Otsu's threshold (of a sample)."""
    from medsr.metrics import otsu_threshold

    threshold = otsu_threshold(_sample(output))
    total, count = 0.0, 0
    for k in range(0, output.shape[2], 16):  # slabs: no full-size mask
        mask = np.asarray(output[:, :, k:k + 16]) > threshold
        total += float(np.sum(np.asarray(sd[:, :, k:k + 16])[mask], dtype=np.float64))
        count += int(mask.sum())
    return total / count if count else float(np.mean(sd, dtype=np.float64))


def subdivision(shape_in, affine_in, shape_out, affine_out) -> tuple[int, int] | None:
    """``(axis, factor)`` when the output grid subdivides one input axis by an integer factor
    (medsr's convention, :mod:`medsr.geometry`), else ``None``."""
    m = np.linalg.solve(np.asarray(affine_in, np.float64), np.asarray(affine_out, np.float64))
    r = np.diag(m)[:3]
    if not np.allclose(m[:3, :3], np.diag(r), atol=1e-4) or np.any(r <= 0):
        return None
    f = np.round(1 / r)
    if not np.allclose(f * r, 1, atol=1e-4) or not np.allclose(m[:3, 3], (r - 1) / 2,
                                                                  atol=1e-3):
        return None
    axes = [a for a in range(3) if f[a] != 1]
    if len(axes) != 1 or any(shape_out[a] != f[a] * shape_in[a] for a in range(3)):
        return None
    return axes[0], int(f[axes[0]])


def _text(values, fmt: str = "{}") -> str:
    return "×".join(fmt.format(v) for v in values)


def _db(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def _model_text(model: dict) -> str:
    if model.get("self_supervised"):
        return (f"fitted to this scan ({model.get('network')}, {model.get('steps')} steps, "
                "trained on its own in-plane slices)")
    factors = model.get("factors") or []
    span = f"factors {factors[0]}–{factors[-1]}" if factors else ""
    parts = [f"{model.get('network')} {model.get('spatial_dims')}D", span,
             str(model.get("modality") or ""), f"{model.get('steps')} steps" if model.get(
                 "steps") else "", f"{model.get('training_data')} training volumes",
             f"experiment {model['experiment']}" if model.get("experiment") else ""]
    return ", ".join(p for p in parts if p)


class _Facts:
    """Rows of the facts table: ``(key, label, text, value)``; ``value`` (a number) goes into
    ``data-value`` for tests and tools."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, object]] = []

    def add(self, key: str, label: str, text: str, value: object = None) -> None:
        self.rows.append((key, label, text, value))

    def add_run(self, info: RunInfo) -> None:
        """The run's rows: time, peak memory (when measured) and the medsr version."""
        import medsr

        if info.seconds is not None:
            self.add("seconds", "time", f"{info.seconds:.1f} s", round(info.seconds, 3))
        if info.peak_memory_bytes:
            self.add("peak_memory", "peak memory (process)",
                     f"{info.peak_memory_bytes / 2**30:.2f} GiB", info.peak_memory_bytes)
        self.add("version", "medsr version", medsr.__version__)

    def html(self) -> str:
        cells = []
        for key, label, text, value in self.rows:
            attr = "" if value is None else f' data-value="{esc(value)}"'
            cells.append(f'<tr data-fact="{esc(key)}"><th>{esc(label)}</th>'
                         f"<td{attr}>{esc(text)}</td></tr>")
        return f'<table class="facts">{"".join(cells)}</table>'


def _geometry_facts(facts: _Facts, which: str, name: str, shape, affine, frames: int) -> None:
    from medsr.geometry import spacing

    sp = spacing(affine)
    oblique = obliquity_degrees(affine)
    facts.add(f"{which}_file", f"{which} file", name)
    facts.add(f"shape_{which}", f"{which} shape", _text(shape)
              + (f" ({frames} volumes; the first shown)" if frames > 1 else ""),
              _text(shape, "{}").replace("×", "x"))
    facts.add(f"spacing_{which}", f"{which} spacing (mm)", _text(sp, "{:.4g}"),
              " ".join(f"{v:.6g}" for v in sp))
    facts.add(f"orientation_{which}", f"{which} orientation",
              orientation_code(affine) + (f" (oblique, {oblique:.1f}°)" if oblique > 0.5
                                          else ""), orientation_code(affine))


@dataclass
class _Scan:
    """The arrays a page is made of: first volumes ``(X, Y, Z)`` and their affines."""

    frame_in: np.ndarray
    affine_in: np.ndarray
    out: np.ndarray
    affine_out: np.ndarray
    sd: np.ndarray | None
    meta: dict
    volumes_in: int = 1
    volumes_out: int = 1


def _panel(key: str, caption: str, png: bytes, view, where: str, shape, scale: float) -> str:
    """One labelled image: the plane with the patient direction of each edge around it."""
    w, h = shape[1] * view.pixel[0] * scale, shape[0] * view.pixel[1] * scale
    labels = "".join(f'<span class="lab {edge}" data-edge="{edge}">{esc(text)}</span>'
                     for edge, text in view.labels.items())
    return (f'<figure class="panel" data-column="{key}"><figcaption>{esc(caption)}'
            f'</figcaption><div class="frame">{labels}<img src="{data_uri(png)}" '
            f'width="{w:.0f}" height="{h:.0f}" alt="{esc(view.name)} {esc(caption)} '
            f'{esc(where)}"></div></figure>')


def _views_html(scan: _Scan, shown: dict, lo: float, hi: float) -> str:
    """The rows of views through the centre and through the slices of largest uncertainty."""
    from medsr.report import images

    out, sd = scan.out, scan.sd
    locations = [("centre", "Through the centre",
                  {name: out.shape[v.fixed] // 2 for name, v in shown.items()})]
    if sd is not None:
        locations.append(("uncertainty", "Through the slices of largest uncertainty",
                          {name: largest_slice(sd, v.fixed) for name, v in shown.items()}))
    sd_max = float(np.percentile(_sample(sd), 99.5)) if sd is not None else 0.0
    extent = max(max(v.plane(out, 0).shape[1] * v.pixel[0],
                     v.plane(out, 0).shape[0] * v.pixel[1]) for v in shown.values())
    scale = DISPLAY_PX / extent
    sections = []
    for where, heading, index in locations:
        rows = [f'<h3 data-location="{where}">{esc(heading)}</h3>']
        if sd is not None:
            bar = images.colorbar_png(sd_max, "standard deviation (scan units)")
            rows.append(f'<p class="note">uncertainty colour scale: <img class="colorbar" '
                        f'src="{data_uri(bar)}" alt="uncertainty colour bar, 0 to '
                        f'{sd_max:.4g}" style="vertical-align:middle"></p>')
        for name, view in shown.items():
            k = index[name]
            planes = {method: view.plane(input_plane(scan.frame_in, scan.affine_in,
                                                     scan.affine_out, out.shape, view.fixed,
                                                     k, method), 0)
                      for method in ("nearest", "bspline")}
            planes = {"input": planes["nearest"], "bspline": planes["bspline"],
                      "output": view.plane(out, k)}
            pngs = {key: images.grey_png(p, lo, hi) for key, p in planes.items()}
            if sd is not None:
                pngs["uncertainty"] = images.overlay_png(planes["output"], view.plane(sd, k),
                                                         lo, hi, sd_max)
            label = f"{name}, slice {k} of {out.shape[view.fixed]} (array axis {view.fixed})"
            cells = [_panel(key, caption, pngs[key], view, label, planes["output"].shape, scale)
                     for key, caption in COLUMNS if key in pngs]
            rows.append(f'<p class="where">{esc(label)}</p><div class="row" '
                        f'data-view="{name}" data-location="{where}">{"".join(cells)}</div>')
        sections.append("".join(rows))
    return "".join(sections)


def _profile_html(scan: _Scan) -> str:
    from medsr.report import images

    profile = edge_profile(scan.frame_in, scan.affine_in, scan.out, scan.affine_out)
    if profile is None:
        return '<p class="sub">The input has a single slice: no profile.</p>'
    plot = images.profile_png(profile, f"output array axis {profile.axis}")
    return (f'<p class="sub">Along output array axis {profile.axis} through voxel '
            f'{list(profile.index)} (the input\'s strongest edge between two slices); dots '
            'are the measured input samples.</p>'
            f'<img id="profile" src="{data_uri(plot)}" alt="through-plane profile" '
            'width="700" height="320">')


def _facts(scan: _Scan, info: RunInfo, in_name: str, out_name: str) -> tuple[_Facts, dict]:
    """The facts table, and the numbers a study row needs (``method``, ``consistency_db``,
    ``mean_sd``)."""
    meta, out = scan.meta, scan.out
    facts = _Facts()
    _geometry_facts(facts, "input", in_name, scan.frame_in.shape, scan.affine_in,
                    scan.volumes_in)
    _geometry_facts(facts, "output", out_name, out.shape, scan.affine_out, scan.volumes_out)
    method = meta.get("medsr_method") or "unknown (not recorded in the output)"
    facts.add("method", "method", method)
    if meta.get("medsr_model"):
        facts.add("model", "model", _model_text(meta["medsr_model"]))
    prof = meta.get("medsr_slice_profile")
    if prof:
        facts.add("slice_profile", "slice profile",
                  f"{prof['kind']}, {prof['width']:.2f}× the slice spacing")
    check = meta.get("medsr_selfcheck")
    if check:
        verdict = ("kept" if check.get("passed") else
                   "kept as asked" if check.get("method") == method else "not better: B-spline")
        facts.add("selfcheck", "self-check against B-spline",
                  f"{check.get('method', method)} {check['learned_psnr']:.2f} dB, B-spline "
                  f"{check['bspline_psnr']:.2f} dB on {check['planes']} in-plane "
                  f"slice{'' if check['planes'] == 1 else 's'} of the scan: {verdict}",
                  check.get("passed"))
    padded = meta.get("medsr_padding")
    if padded:
        lo, hi = padded["range_hu"]
        values = f"{lo:g} HU" if lo == hi else f"{lo:g} to {hi:g} HU"
        facts.add("padding", "CT padding (outside the reconstruction circle)",
                  f"{padded['voxels']:,} input voxels ({100 * padded['share']:.1f} %) at "
                  f"{values}: read as air by the network, put back exactly in the output",
                  padded["voxels"])
    if meta.get("medsr_input_lossy"):
        facts.add("lossy", "input compression",
                  f"lossy before ({meta['medsr_input_lossy']}): its finest detail is partly "
                  "compression artefacts; compare with B-spline", meta["medsr_input_lossy"])
    consistency = meta.get("medsr_consistency_psnr")
    grid = subdivision(scan.frame_in.shape, scan.affine_in, out.shape, scan.affine_out)
    label = "re-degraded output vs input"
    if consistency is not None:
        before = meta.get("medsr_consistency_psnr_before")
        facts.add("consistency", label,
                  _db(consistency) + (f" (before the consistency projection {_db(before)})"
                                      if before is not None and before != consistency else ""),
                  consistency)
    elif grid is not None:
        from medsr.consistency import SliceProfile, redegradation_psnr

        kind, width = (prof["kind"], prof["width"]) if prof else ("box", 1.0)
        consistency = redegradation_psnr(out, scan.frame_in, grid[0], grid[1],
                                         SliceProfile(kind, width))
        facts.add("consistency", label, f"{_db(consistency)} (measured here, {kind} profile "
                  f"{width:.2f}× spacing along array axis {grid[0]})", consistency)
    else:
        facts.add("consistency", label,
                  "not measured (the output grid does not subdivide one input axis)")
    mean_sd = None
    if scan.sd is not None:
        mean_sd = body_mean(scan.sd, out)
        largest = float(np.max(scan.sd))
        facts.add("mean_sd", "mean uncertainty (sd) in the body", f"{mean_sd:.4g}", mean_sd)
        facts.add("max_sd", "largest uncertainty (sd)", f"{largest:.4g}", largest)
        cal = meta.get("medsr_uncertainty") or {}
        if cal.get("coverage") is not None:
            facts.add("coverage", "uncertainty coverage (calibration data)",
                      f"{100 * cal['coverage']:.1f} % of voxels within 2 sd on the scan's own "
                      f"in-plane slices (rank correlation {cal['rank_correlation']:.2f})",
                      cal["coverage"])
    facts.add_run(info)
    return facts, {"method": method, "consistency_db": consistency, "mean_sd": mean_sd}


def build_report(volume: MetaTensor, output: MetaTensor, sd: MetaTensor | None = None,
                 info: RunInfo | None = None) -> tuple[str, dict]:
    """The HTML page of one scan and a summary of it (for a study table).

    Args:
        volume: the input MetaTensor (3D or 4D; of 4D volumes the first is shown).
        output: the upscaled MetaTensor (any grid covering the input: another medsr run, or a
            volume from elsewhere); its ``medsr_*`` metadata, when present, fills the facts.
        sd: the uncertainty map on the output grid, or ``None``.
        info: time and memory of the run, and names to show.

    Returns:
        ``(html, summary)``; the summary has ``method``, ``shape_in``, ``shape_out``,
        ``consistency_db``, ``mean_sd``, ``seconds`` and ``thumbnail`` (a PNG data URI).
    """
    import medsr
    from medsr.errors import MedsrError
    from medsr.io import volume_frames
    from medsr.report import images

    info = info or RunInfo()
    frames_in, affine_in, source_in = volume_frames(volume)
    frames_out, affine_out, source_out = volume_frames(output)
    sd_frame = volume_frames(sd)[0][0] if sd is not None else None
    if sd_frame is not None and sd_frame.shape != frames_out.shape[1:]:
        raise MedsrError(f"the uncertainty map's shape {sd_frame.shape} is not the output's "
                         f"{frames_out.shape[1:]}")
    scan = _Scan(frames_in[0], affine_in, frames_out[0], affine_out, sd_frame,
                 getattr(output, "meta", {}) or {}, frames_in.shape[0], frames_out.shape[0])
    in_name = info.input_name or Path(source_in.path).name or "input"
    out_name = info.output_name or ("output (not saved yet)" if source_out.path in (
        "", source_in.path) else Path(source_out.path).name)
    every = views(affine_out)  # a single slice shows its own plane only, not edge-on strips
    shown = {name: v for name, v in every.items()
             if min(scan.out.shape[v.across], scan.out.shape[v.down]) > 1} or every
    centre = {name: scan.out.shape[v.fixed] // 2 for name, v in shown.items()}
    lo, hi = images.window(*(v.plane(scan.out, centre[n]) for n, v in shown.items()))
    views_html = _views_html(scan, shown, lo, hi)
    facts, numbers = _facts(scan, info, in_name, out_name)
    consistency = numbers["consistency_db"]
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary_line = (f"{_text(scan.frame_in.shape)} → {_text(scan.out.shape)}; "
                    f"{numbers['method']}" + (f"; re-degraded vs input {_db(consistency)}"
                                              if consistency is not None else ""))
    body = (f"<h1>medsr report: {esc(in_name)}</h1><p class=\"sub\">{esc(out_name)} · "
            f"{esc(summary_line)}</p>"
            "<h2>Views</h2><p class=\"sub\">Each row: the input on the output grid (nearest "
            "neighbour: the thick slices as they are), its cubic B-spline, the output, and "
            "the uncertainty over it. Letters give the patient direction of each edge, from "
            "the output's affine, as a radiology viewer shows them.</p>" + views_html
            + f"<h2>Through-plane profile</h2>{_profile_html(scan)}"
            + f"<h2>Facts</h2>{facts.html()}"
            + f"<footer>Made by medsr {esc(medsr.__version__)} on {made}. Self-contained: "
              "the images are embedded.</footer>")
    first = "axial" if "axial" in shown else next(iter(shown))
    thumbnail = images.thumbnail_png(shown[first].plane(scan.out, centre[first]), lo, hi,
                                     shown[first].pixel)
    summary = {**numbers, "shape_in": _text(scan.frame_in.shape),
               "shape_out": _text(scan.out.shape), "seconds": info.seconds,
               "thumbnail": data_uri(thumbnail)}
    return page(f"medsr report: {in_name}", body), summary


def report_path(volume: Path, folder: Path | None = None) -> Path:
    """``x_sr.nii.gz -> x_sr.html`` beside it (or in ``folder``); a DICOM folder
    ``x_sr/ -> x_sr.html``."""
    from medsr.io import VOLUME_SUFFIXES

    name = volume.name
    for ext in VOLUME_SUFFIXES:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return (folder if folder is not None else volume.parent) / f"{name}.html"


def write_report(path: str | Path, volume: MetaTensor, output: MetaTensor,
                 sd: MetaTensor | None = None, info: RunInfo | None = None) -> dict:
    """Write the page of :func:`build_report` to ``path`` (atomically; an existing file is
    replaced); returns the summary."""
    text, summary = build_report(volume, output, sd, info)
    write_text(path, text)
    return summary
