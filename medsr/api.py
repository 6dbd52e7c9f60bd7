"""The Python API that the CLI wraps: ``upscale``, ``load_volume``, ``save_volume``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsr.io import load_volume, save_volume
from medsr.upscaling import METHODS, PROFILES, upscale_volume

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = ["METHODS", "PROFILES", "load_volume", "save_volume", "upscale"]


def upscale(volume: str | Path | MetaTensor, scale: Sequence[int] | None = None, *,
            report: str | Path | None = None, **options: Any):
    """Upscale a volume; with ``report``, also write its visual QC page there.

    Every argument but ``report`` is :func:`medsr.upscaling.upscale_volume`'s (``method``,
    ``uncertainty``, ``spacing``, ...), and so is the result: the output, or
    ``(output, sd)`` with ``uncertainty=True``.

    Args:
        volume: a path or a MetaTensor (see :func:`~medsr.upscaling.upscale_volume`).
        scale: integer factor per array axis (default: from the spacings).
        report: an ``.html`` file for the report of :mod:`medsr.report.scan` (input, B-spline,
            output and uncertainty in three views, a through-plane profile, the facts,
            time and peak memory); written atomically, replacing an existing file.

    Example:
        >>> from medsr import upscale
        >>> sr, sd = upscale("brain.nrrd", uncertainty=True, report="brain.html")  # doctest: +SKIP
    """
    if report is None:
        return upscale_volume(volume, scale, **options)
    import time

    from medsr.report.scan import RunInfo, peak_memory, write_report

    if isinstance(volume, str | Path):
        volume = load_volume(volume, series_uid=options.pop("series_uid", None))
    start = time.perf_counter()
    result = upscale_volume(volume, scale, **options)
    seconds = time.perf_counter() - start
    output, sd = result if isinstance(result, tuple) else (result, None)
    write_report(report, volume, output, sd, RunInfo(seconds, peak_memory()))
    return result
