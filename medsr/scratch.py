"""Disk-backed arrays for outputs larger than memory should hold.

A scratch array is an ordinary ``numpy.ndarray`` over a shared memory map of an unlinked
temporary file: writing it dirties the page cache, not the process's own memory, and
:func:`release` drops the pages the process has touched (they stay in the file, and are read
back on the next access). The work loops call :func:`release` after each slab or chunk, so a
volume of any size is made and written with a bounded resident set. The file disappears
with the last reference to the array.

``numpy.memmap`` is not used because it keeps the file name around and gives no way to drop
resident pages; ``mmap.madvise`` (Python 3.8+, Linux and macOS) does.

Frames are laid out as NIfTI stores them (Fortran order, the time axis slowest), so the
writer streams them in file order.
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medsr.errors import MedsrError

#: environment variable naming the folder for scratch files (default: the system's temp dir)
SCRATCH_ENV = "MEDSR_SCRATCH"
#: address range of each live scratch map: arrays reach :func:`release` through torch and
#: MetaTensor conversions, which do not keep numpy's chain of views
_MAPS: list[tuple[int, int, weakref.ref]] = []
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_RANDOM = getattr(mmap, "MADV_RANDOM", None)


def scratch_dir(preferred: str | Path | None = None) -> Path:
    """Where scratch files go: ``preferred`` (e.g. the output's folder), else
    ``$MEDSR_SCRATCH``, else the system's temporary folder."""
    return Path(preferred or os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())


def scratch_frames(frames: int, shape: Sequence[int], directory: str | Path | None = None,
                   dtype: np.dtype | str = np.float32) -> np.ndarray:
    """An uninitialised ``(T, X, Y, Z)`` array on disk, each frame Fortran-contiguous."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape)) * frames * dtype.itemsize)
    folder = scratch_dir(directory)
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".medsr-scratch-") as handle:
            _reserve(handle.fileno(), nbytes)
            buffer = mmap.mmap(handle.fileno(), nbytes)  # MAP_SHARED; keeps its descriptor
    except OSError as err:
        raise MedsrError(f"cannot make a {nbytes / 2**30:.2f} GiB scratch output in {folder} "
                         f"({err.strerror or err}); free space there or set {SCRATCH_ENV} "
                         "to a folder with room") from None
    if _RANDOM is not None:  # no readahead or fault-around: a strided slab maps its own pages
        buffer.madvise(_RANDOM)
    stored = np.ndarray((*shape, frames), dtype=dtype, buffer=buffer, order="F")
    start = stored.__array_interface__["data"][0]
    _MAPS[:] = [m for m in _MAPS if m[2]() is not None]
    _MAPS.append((start, start + nbytes, weakref.ref(buffer)))
    return np.moveaxis(stored, -1, 0)


def _reserve(fd: int, nbytes: int) -> None:
    """Allocate the file's blocks now, so a full disk is an error here and not a crash (a
    bus error) when a page is first written; a sparse file where that is not supported."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except (AttributeError, OSError) as err:
        if isinstance(err, OSError) and err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS,
                                                           errno.EINVAL):
            raise
        os.ftruncate(fd, nbytes)


def is_scratch(array) -> bool:
    """Whether ``array`` (a numpy array or a CPU tensor) lives in a scratch file."""
    return _buffer(array) is not None


def release(*arrays) -> None:
    """Drop the resident pages of scratch arrays (a no-op for anything else); their values
    stay in the file."""
    for array in arrays:
        buffer = _buffer(array) if array is not None else None
        if buffer is not None and _DONTNEED is not None:  # madvise: Linux, macOS
            buffer.madvise(_DONTNEED)


def _buffer(array) -> mmap.mmap | None:
    """The live scratch map holding ``array``'s data, if any."""
    try:
        address = (array.data_ptr() if hasattr(array, "data_ptr")
                   else np.asarray(array).__array_interface__["data"][0])
    except (TypeError, ValueError, RuntimeError):
        return None
    for start, stop, ref in _MAPS:
        buffer = ref()
        if buffer is not None and start <= address < stop:
            return buffer
    return None
