"""Visual QC reports: one self-contained HTML page per scan (:mod:`medsr.report.scan`) and
one per study (:mod:`medsr.report.study`). matplotlib is imported only when a page is made."""

from __future__ import annotations

from medsr.report.scan import RunInfo, build_report, write_report

__all__ = ["RunInfo", "build_report", "write_report"]
