"""The visual QC page of ``medsr fuse``: each stack on the fused grid (through its
registration, nearest neighbour: its thick slices as they are), the fused volume in three
views, each stack's residual (the stack minus the fused volume degraded by that stack's own
operator, on one of its measured planes), the registration table and the facts. One
self-contained HTML file, as :mod:`medsr.report.scan` makes.

Example:
    >>> import medsr
    >>> from medsr.io import read_frames
    >>> stacks = [read_frames(p) for p in ("ax.nii.gz", "cor.nii.gz")]   # doctest: +SKIP
    >>> fused = medsr.fuse(stacks)                                        # doctest: +SKIP
    >>> write_fuse_report("fused.html", stacks, fused)                    # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np

from medsr.report.html import esc, page, write_text
from medsr.report.orientation import views
from medsr.report.scan import DISPLAY_PX, RunInfo, _db, _Facts, _panel, _text


def _residual(stack: np.ndarray, affine: np.ndarray, record: dict, grid, fused: np.ndarray
              ) -> tuple[np.ndarray, int]:
    """The stack minus what the fused volume predicts of it (0 where the grid does not see
    it), and its thick axis."""
    import torch

    from medsr.consistency import SliceProfile
    from medsr.fusion.operators import StackOperator

    op = StackOperator(stack.shape, affine, grid,
                       np.asarray(record["registration"]["matrix_ras"], dtype=np.float64),
                       SliceProfile("box", float(record.get("profile_width", 1.0))))
    predicted = op.forward(torch.from_numpy(np.ascontiguousarray(fused)))
    residual = (torch.from_numpy(np.ascontiguousarray(stack)) - predicted) * op.mask
    return residual.numpy(), op.thick_axis


def _registration_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        reg = r.get("registration") or {}
        if reg.get("reference"):
            moved, corr = "reference", ""
        elif reg.get("header"):
            moved, corr = "as in its header (not registered)", ""
        else:
            moved = f"{reg['rotation_deg']:.2f}°, {reg['shift_mm']:.2f} mm"
            corr = f"{reg['correlation_before']:.3f} → {reg['correlation']:.3f}"
        status = (f'<span class="status-error">left out</span>: {esc(r["left_out"])}'
                  if r.get("left_out") else '<span class="status-ok">kept</span>')
        psnr = r.get("consistency_psnr")
        noise = r.get("residual_over_noise")
        consistency = "" if psnr is None else (
            _db(float(psnr)) + (f" (residual {noise:.2f}× its noise sd)" if noise else ""))
        matrix = "<br>".join(" ".join(f"{v:+.4f}" for v in row)
                             for row in reg.get("matrix_ras", [])[:3])
        rows.append(f'<tr data-stack="{esc(r["name"])}"><td>{esc(r["name"])}</td>'
                    f'<td>{esc(_text(r["shape"]))} at {esc(_text(r["spacing_mm"], "{:.3g}"))}'
                    f' mm</td><td>{esc(moved)}</td><td>{esc(corr)}</td>'
                    f'<td style="font:11px monospace">{matrix}</td><td>{status}</td>'
                    f"<td>{esc(consistency)}</td></tr>")
    return ("<table class=\"study\"><tr><th>stack</th><th>voxels</th><th>moved (rotation, "
            "shift of its centre)</th><th>correlation before → after</th><th>transform "
            "(RAS, stack → reference)</th><th>status</th><th>re-degraded fused vs stack</th>"
            f"</tr>{''.join(rows)}</table>")


def build_fuse_report(stacks, fused, info: RunInfo | None = None) -> str:
    """The HTML page of a fused volume and the stacks it was made from.

    Args:
        stacks: the input stacks (:class:`~medsr.io.Frames` or MetaTensors), in the order
            given to :func:`medsr.fuse`.
        fused: its result (with ``meta["medsr_fuse"]``).
        info: time and memory of the run, and the output's name.
    """
    import medsr
    from medsr.errors import MedsrError
    from medsr.fusion.grid import Grid, resample_onto
    from medsr.io import volume_frames
    from medsr.report import images

    info = info or RunInfo()
    out_frames, out_affine, _ = volume_frames(fused)
    meta = getattr(fused, "meta", {}) or {}
    record = meta.get("medsr_fuse")
    if record is None or len(record["stacks"]) != len(stacks):
        raise MedsrError("the fused volume carries no record of these stacks (medsr_fuse)")
    out = out_frames[0]
    grid = Grid(tuple(out.shape), out_affine)
    shown = views(out_affine)
    centre = {name: out.shape[v.fixed] // 2 for name, v in shown.items()}
    lo, hi = images.window(*(v.plane(out, centre[n]) for n, v in shown.items()))
    extent = max(max(v.plane(out, 0).shape[1] * v.pixel[0],
                     v.plane(out, 0).shape[0] * v.pixel[1]) for v in shown.values())
    scale = DISPLAY_PX / extent

    def row(key: str, caption: str, volume: np.ndarray) -> str:
        cells = []
        for name, view in shown.items():
            plane = view.plane(volume, centre[name])
            where = f"{name}, slice {centre[name]} of {out.shape[view.fixed]}"
            cells.append(_panel(key, f"{caption}: {name}", images.grey_png(
                np.nan_to_num(plane, nan=lo), lo, hi), view, where, plane.shape, scale))
        return f'<div class="row" data-row="{esc(key)}">{"".join(cells)}</div>'

    stack_rows, residual_cells = [], []
    for frames, rec in zip(stacks, record["stacks"]):
        array, affine, _ = volume_frames(frames)
        transform = np.asarray(rec["registration"]["matrix_ras"], dtype=np.float64)
        on_grid = resample_onto(array[0], affine, grid, transform, "nearest", math.nan)
        note = " (left out)" if rec.get("left_out") else ""
        stack_rows.append(f'<h3>{esc(rec["name"])}{esc(note)}</h3>'
                          + row(f"stack:{rec['name']}", rec["name"], on_grid))
        if rec.get("left_out"):
            continue
        residual, thick = _residual(array[0], affine, rec, grid, out)
        view = next(v for v in views(affine).values() if v.fixed == thick)
        k = array.shape[1 + thick] // 2
        plane = view.plane(residual, k)
        limit = float(np.percentile(np.abs(residual), 99.5)) or 1.0
        png = images.signed_png(plane, limit)
        rms = float(np.sqrt(np.mean(np.square(residual[residual != 0])))) \
            if np.any(residual) else 0.0
        caption = f"{rec['name']}: slice {k} of {array.shape[1 + thick]}, ±{limit:.3g}"
        residual_cells.append(
            _panel(f"residual:{rec['name']}", caption, png, view,
                   f"RMS {rms:.3g}", plane.shape, DISPLAY_PX / max(
                       plane.shape[1] * view.pixel[0], plane.shape[0] * view.pixel[1])))
    facts = _Facts()
    facts.add("output_file", "output", info.output_name or "fused volume (not saved yet)")
    facts.add("grid", "grid", f"{_text(out.shape)} at "
              f"{_text(record['grid']['spacing_mm'], '{:.4g}')} mm ({record['extent']} "
              f"extent, in {record['reference']}'s orientation)", _text(out.shape))
    facts.add("method", "method", meta.get("medsr_method", ""))
    facts.add("prior", "prior", "the mean of each stack's default-model SR (changed least)"
              if record["prior"] == "learned" else "none: a plain regularised solve")
    solve = record["solve"]
    facts.add("solve", "joint solve", f"{solve['iterations']} iterations ({solve['stopped']}),"
              f" regulariser weight {solve['smooth']:g}", solve["iterations"])
    kept = [r for r in record["stacks"] if not r.get("left_out")]
    facts.add("kept", "stacks kept", f"{len(kept)} of {len(record['stacks'])}", len(kept))
    facts.add_run(info)
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"medsr fuse report: {info.output_name or 'fused volume'}"
    body = (f"<h1>{esc(title)}</h1><p class=\"sub\">{len(kept)} stacks → "
            f"{esc(_text(out.shape))} · {esc(meta.get('medsr_method', ''))}</p>"
            "<h2>Fused volume</h2><p class=\"sub\">Three views through the centre of the grid. "
            "Letters give the patient direction of each edge.</p>"
            + row("fused", "fused", out)
            + "<h2>Stacks</h2><p class=\"sub\">Each stack on the fused grid through its "
            "registration, nearest neighbour (its thick slices as they are); black where it "
            "does not reach.</p>" + "".join(stack_rows)
            + "<h2>Residuals</h2><p class=\"sub\">Each stack minus the fused volume degraded "
            "by that stack's own operator (slice profile, pixel, registration), on its middle "
            "measured plane; blue below, red above. Structure here is what the fused volume "
            "does not explain.</p>"
            + f'<div class="row" id="residuals">{"".join(residual_cells)}</div>'
            + f"<h2>Registration</h2>{_registration_table(record['stacks'])}"
            + f"<h2>Facts</h2>{facts.html()}"
            + f"<footer>Made by medsr {esc(medsr.__version__)} on {made}. Self-contained: "
              "the images are embedded.</footer>")
    return page(title, body)


def write_fuse_report(path: str | Path, stacks, fused, info: RunInfo | None = None) -> Path:
    """Write the page of :func:`build_fuse_report` to ``path`` (atomically)."""
    return write_text(path, build_fuse_report(stacks, fused, info))
