"""Peak-memory model of an upscaling run, and the check that refuses a run that would not fit.

A run goes through three phases, and its peak is the largest of them:

* load: the reader's decoded buffer, the stored array (``in_dtype``) and its float32 copy;
* resample: the float32 input, the float32 outputs unless they are made on disk
  (:mod:`medsr.scratch`), and the method's working set (for the one-axis B-spline/linear path
  of :func:`medsr.resample.resample_axis`, a few slabs; for the general SimpleITK path, ITK's
  float32 input copy, float64 coefficient image and output buffer; for learned methods, the
  slab working set given by the caller);
* write: input and outputs (unless on disk) still held, plus the writer's own: a chunk for
  the NIfTI and DICOM writers, which cast and write a chunk of slices at a time; the whole
  output, its stored-type copy and ITK's image for NRRD/MHA (SimpleITK writes whole images).

Sizes are in bytes; messages print GiB (2**30 bytes). The constants were measured on Linux with
``resource.getrusage`` (see ``benchmarks/cost_curve.py``, which reports model and measurement
side by side).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsr.errors import MedsrError
from medsr.resample import SLAB_BYTES, thread_budget

GiB = 2**30
#: resident memory of a ``medsr upscale`` process once torch, MONAI, nibabel are imported
#: (measured 430-470 MiB), rounded up
BASE_BYTES = 500 * 2**20
#: allocator slack of the one-axis path, beyond its slabs (see :func:`fast_work_bytes`)
FAST_SLACK_BYTES = 32 * 2**20
#: what a streaming writer holds: a chunk of slices as float32 and cast, gzip buffers, slack
STREAM_WRITE_BYTES = 96 * 2**20
CLASSICAL = ("bspline", "linear")


def estimate_peak_bytes(in_shape: Sequence[int], out_shape: Sequence[int], method: str, *,
                        in_dtype: str = "int16", out_dtype: str | None = None,
                        work_bytes: float | None = None, one_axis: bool | None = None,
                        outputs: int = 1, on_disk: bool = False, streamed: bool = True,
                        base_bytes: int = BASE_BYTES) -> int:
    """Estimated peak resident memory of loading, upscaling and writing one volume.

    Args:
        in_shape: source array shape (3D; a 4D series counts all its frames).
        out_shape: output array shape.
        method: ``"bspline"`` or ``"linear"``; anything else is a learned method and needs
            ``work_bytes``.
        in_dtype: stored dtype of the source (what the reader holds while converting).
        out_dtype: stored dtype of the output; default ``in_dtype``.
        work_bytes: the method's working set beyond input and outputs (for learned methods,
            one slab's copies, the model and its activations); default for interpolation:
            :func:`fast_work_bytes` on one axis, SimpleITK's buffers otherwise.
        one_axis: whether a single axis is resampled (the fast path); default: inferred from
            the shapes (at most one axis changes length).
        outputs: float32 output arrays (2 with an uncertainty map).
        on_disk: the outputs are made in scratch files and not held in memory.
        streamed: the writer casts and writes a chunk at a time (NIfTI, DICOM); ``False``
            for NRRD/MHA, written whole through SimpleITK.
        base_bytes: resident size of the process before any volume is loaded.

    Returns:
        bytes.
    """
    n_in = math.prod(int(s) for s in in_shape)
    n_out = math.prod(int(s) for s in out_shape)
    source = np.dtype(in_dtype)
    target = np.dtype(out_dtype or in_dtype)
    held = base_bytes + 4 * n_in  # the loaded volume, as float32
    # the reader's decoded buffer (gzip NIfTI, DICOM pixel data), the stored array, float32
    load = base_bytes + (2 * source.itemsize + 4) * n_in
    kept = 0 if on_disk else 4 * n_out * outputs
    if work_bytes is None:
        if method not in CLASSICAL:
            raise ValueError(f"method {method!r} needs work_bytes (its working set)")
        if one_axis is None:
            one_axis = sum(int(a) != int(b) for a, b in zip(in_shape, out_shape)) <= 1
        # SimpleITK: float32 input image, float64 coefficients (B-spline), ITK output
        work_bytes = fast_work_bytes() if one_axis else (
            4 * n_in + (8 * n_in if method == "bspline" else 0) + 4 * n_out)
    resample = held + kept + work_bytes
    if streamed:
        write = held + kept + STREAM_WRITE_BYTES
    else:  # the output read whole, cast to the stored type, copied into an ITK image
        write = held + 4 * n_out * outputs + 2 * target.itemsize * n_out
    return int(max(load, resample, write))


def fast_work_bytes(workers: int | None = None) -> int:
    """Working set of the one-axis path: per worker thread (default
    :func:`medsr.resample.thread_budget`), a slab of float32 lines and a sub-slab of output and
    temporaries, about SLAB_BYTES each."""
    return 2 * SLAB_BYTES * (workers or thread_budget()) + FAST_SLACK_BYTES


def available_memory_bytes() -> int:
    """Memory this process may still grow into: its own RSS plus what the system has free.

    The system's share is ``MemAvailable`` (``/proc/meminfo``; else ``SC_AVPHYS_PAGES``), and
    no more than the cgroup (container) limit left over, when there is one.
    """
    free = _meminfo_available()
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        free = min(free, cgroup)
    return int(free + _own_rss())


def check_memory(estimate: int, limit_bytes: int | None = None, *,
                 what: str = "this request") -> None:
    """Refuse, before any work, a run whose estimated peak exceeds the limit.

    Args:
        estimate: from :func:`estimate_peak_bytes`.
        limit_bytes: the limit (e.g. ``--max-memory``); default :func:`available_memory_bytes`.
        what: the request in words, for the message (e.g. ``"upscaling 512×512×300 ×5"``).

    Raises:
        MedsrError: one line naming the memory needed and the limit.
    """
    if limit_bytes is None:
        limit, source = available_memory_bytes(), "available on this machine"
    else:
        limit, source = int(limit_bytes), "allowed (--max-memory)"
    if estimate > limit:
        raise MedsrError(f"{what} needs about {format_bytes(estimate)} of memory, more than the "
                         f"{format_bytes(limit)} {source}; use a smaller scale or a crop, "
                         "or a machine with more memory")


def format_bytes(n: float) -> str:
    """``1.57 GiB`` / ``630 MiB``."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 2**62  # unknown: do not refuse


def _cgroup_headroom() -> int | None:
    """Limit minus usage of the cgroup (v2, else v1), or None without a limit.

    Reclaimable page cache (inactive file pages) does not count as usage.
    """
    layouts = [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                "/sys/fs/cgroup/memory.stat", "inactive_file"),
               ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")]
    for limit_path, usage_path, stat_path, cache_key in layouts:
        try:
            limit = Path(limit_path).read_text().strip()
            usage = int(Path(usage_path).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:
            return None
        try:
            stats = dict(line.split() for line in Path(stat_path).read_text().splitlines())
            usage -= int(stats.get(cache_key, 0))
        except (OSError, ValueError):
            pass
        return max(0, int(limit) - usage)
    return None


def _own_rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0
