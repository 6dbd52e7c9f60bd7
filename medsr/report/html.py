"""Shared pieces of the report pages: the style sheet, escaping, embedded images, and the
atomic write. Pages are plain HTML with inline CSS; images are ``data:`` URIs, so a page is one
file that opens offline and requests nothing."""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1d232a;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:16px 24px 40px}
h1{font-size:21px;margin:8px 0 2px}h2{font-size:17px;margin:26px 0 8px;
 border-bottom:1px solid #d8dde3;padding-bottom:4px}h3{font-size:14px;margin:14px 0 6px}
.sub{color:#5b6570;margin:0 0 10px}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure.panel{margin:0;background:#fff;border:1px solid #dde2e8;border-radius:6px;
 padding:6px 8px 8px}
figure.panel figcaption{font-weight:600;font-size:12px;margin-bottom:2px;color:#333}
.frame{display:grid;grid-template-columns:auto auto auto;grid-template-rows:auto auto auto;
 align-items:center;justify-items:center;font:600 12px monospace;color:#1f6fb2}
.frame img{grid-column:2;grid-row:2;image-rendering:pixelated;background:#000;display:block}
.lab.top{grid-column:2;grid-row:1}.lab.bottom{grid-column:2;grid-row:3}
.lab.left{grid-column:1;grid-row:2;padding-right:3px}
.lab.right{grid-column:3;grid-row:2;padding-left:3px}
.where{font-size:12px;color:#5b6570}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde2e8;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#eef1f4}
table.facts th{width:210px;font-weight:600}
table.study th{cursor:pointer;user-select:none;white-space:nowrap}
table.study th[aria-sort=ascending]::after{content:" \\25B2"}
table.study th[aria-sort=descending]::after{content:" \\25BC"}
tr.error td{background:#fdecec}tr.skipped td{color:#5b6570}
.status-error{color:#b3261e;font-weight:600}.status-ok{color:#1e7b34;font-weight:600}
.error-text{color:#b3261e;font-size:12px;max-width:300px;white-space:normal}
.note{color:#5b6570;font-size:12px}
footer{color:#5b6570;font-size:12px;margin-top:30px}
"""


def esc(text: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document."""
    js = f"<script>{script}</script>" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main>{js}</body></html>\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary name beside it, then renamed)."""
    from medsr.io.atomic import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
