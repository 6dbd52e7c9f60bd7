"""A study's report: one table row per input (thumbnail, method, shapes, consistency, mean
uncertainty, time, status with the error of a failed input) linking to each scan's page,
sortable by clicking a column header (a few lines of plain JavaScript).

The page is rewritten (atomically) after every row, so a crashed run leaves a true report of
what was done.

Example:
    >>> study = StudyReport(out / "report.html", title="study/")       # doctest: +SKIP
    >>> study.add({"input": "a.nii.gz", "status": "error", "error": "truncated"})
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from medsr.report.html import esc, page, write_text

#: (key, header) of the table's columns
COLUMNS = (("thumbnail", ""), ("input", "input"), ("status", "status"), ("method", "method"),
           ("shape_in", "shape in"), ("shape_out", "shape out"),
           ("consistency_db", "consistency (dB)"), ("mean_sd", "mean sd"),
           ("seconds", "time (s)"), ("report", "page"))
#: what a skipped input keeps from the row of the run that made its output
KEPT_ON_SKIP = ("thumbnail", "method", "shape_in", "shape_out", "consistency_db", "mean_sd")
#: what a header means, shown on hover
TITLES = {"consistency_db": "the output degraded again with the slice profile, against the "
                            "input: PSNR in dB", "mean_sd": "mean uncertainty (sd) in the body"}

SORT_JS = """
document.querySelectorAll("table.study th").forEach(function(th, col) {
  th.addEventListener("click", function() {
    var body = th.closest("table").tBodies[0];
    var up = th.getAttribute("aria-sort") !== "ascending";
    th.closest("tr").querySelectorAll("th").forEach(function(h) {
      h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b) {
      var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
      if (x === "" || y === "") return (x === "") - (y === "");  // blanks last
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function(r) { body.appendChild(r); });
  });
});
"""


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if not math.isnan(v) else None


def _cell(key: str, row: dict, base: Path) -> str:
    value = row.get(key)
    if key == "thumbnail":
        src = str(value or "")
        img = (f'<img src="{esc(src)}" alt="{esc(row.get("input", ""))}">'
               if src.startswith("data:image/png;base64,") else "")
        return f'<td data-sort="">{img}</td>'
    if key == "report":
        link = str(value or "")
        return (f'<td data-sort="{esc(link)}"><a href="{esc(link)}">page</a></td>' if link
                and (base / link).exists() else '<td data-sort=""></td>')
    if key in ("consistency_db", "mean_sd", "seconds"):
        v = _number(value)
        text = "" if v is None else ("exact" if math.isinf(v) else f"{v:.4g}")
        sort = "" if v is None else ("1e308" if math.isinf(v) else repr(v))
        return f'<td data-sort="{sort}" data-value="{esc("" if v is None else v)}">{text}</td>'
    text = "" if value is None else str(value)
    if key == "status":
        error = str(row.get("error") or "")
        detail = f'<div class="error-text">{esc(error)}</div>' if error else ""
        return (f'<td data-sort="{esc(text)}"><span class="status-{esc(text)}">{esc(text)}'
                f"</span>{detail}</td>")
    return f'<td data-sort="{esc(text)}">{esc(text)}</td>'


class StudyReport:
    """The study page at ``path``, rewritten as rows are added.

    Rows are dicts with the keys of :data:`COLUMNS` (missing ones are left blank); ``report``
    is the scan page's path relative to the study page's folder, ``thumbnail`` a PNG data
    URI. A row with the same ``input`` and ``series_uid`` as an earlier one replaces it.
    """

    def __init__(self, path: str | Path, title: str = "") -> None:
        self.path = Path(path)
        self.title = title
        self.rows: dict[tuple[str, str], dict] = {}
        self.previous = {_key(r): r for r in _read_rows(self.data_path)}
        self.write()

    @property
    def data_path(self) -> Path:
        """The rows as JSON beside the page (``report.json``), for scripts and reruns."""
        return self.path.with_suffix(".json")

    def add(self, row: dict) -> None:
        """Add (or replace) one row and rewrite the page. A ``skipped`` row keeps the
        thumbnail and numbers of the earlier run's row (:data:`KEPT_ON_SKIP`)."""
        row = dict(row)
        if row.get("status") == "skipped":
            old = self.previous.get(_key(row), {})
            row.update({k: old[k] for k in KEPT_ON_SKIP if old.get(k) not in (None, "")})
        self.rows[_key(row)] = row
        self.write()

    def html(self) -> str:
        """The page as it stands."""
        rows = [self.rows[k] for k in sorted(self.rows)]
        counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "skipped", "error")}
        head = "".join(f'<th scope="col" title="{esc(TITLES.get(key, h or key))}; click to '
                       f'sort">{esc(h)}</th>' for key, h in COLUMNS)
        body = "".join(
            f'<tr class="{esc(r.get("status", ""))}" data-input="{esc(r.get("input", ""))}">'
            + "".join(_cell(key, r, self.path.parent) for key, _ in COLUMNS) + "</tr>"
            for r in rows)
        summary = (f"{len(rows)} inputs: {counts['ok']} done, {counts['skipped']} skipped "
                   f"(output already there), {counts['error']} failed")
        return page(f"medsr study report {self.title}".strip(),
                    f"<h1>medsr study report {esc(self.title)}</h1>"
                    f'<p class="sub" id="summary">{esc(summary)}. Click a column header to '
                    "sort; each input links to its own page.</p>"
                    f'<table class="study"><thead><tr>{head}</tr></thead>'
                    f"<tbody>{body}</tbody></table>", SORT_JS)

    def write(self) -> None:
        """Write the rows (JSON) and the page, each atomically."""
        import json

        rows = [self.rows[k] for k in sorted(self.rows)]
        write_text(self.data_path, json.dumps(rows, default=_plain) + "\n")
        write_text(self.path, self.html())


def _key(row: dict) -> tuple[str, str]:
    return str(row.get("input", "")), str(row.get("series_uid") or "")


def _plain(value):
    """JSON for what ``json`` does not know (numpy numbers)."""
    return value.item() if hasattr(value, "item") else str(value)


def _read_rows(path: Path) -> list[dict]:
    """Rows of an earlier ``report.json`` (none when missing or unreadable)."""
    import json

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def relative(path: Path, start: Path) -> str:
    """``path`` relative to the folder ``start``, with ``/``."""
    return Path(os.path.relpath(path, start)).as_posix()
