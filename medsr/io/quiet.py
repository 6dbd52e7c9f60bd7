"""Keep library warnings (pydicom, nibabel, SimpleITK wrappers) off the terminal.

While an input is read, Python warnings raised by the libraries (and pydicom's error records,
which its decoders write with a traceback) are captured and sent to the
``medsr.io`` logger at INFO (each distinct message once), followed by a one-line summary such
as ``"scan/: 3 tags longer than the standard allows"``. ``medsr.logs.setup_logging`` decides
what reaches the terminal.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("medsr.io")

_KINDS = (
    (re.compile(r"value length .* exceeds the maximum length", re.IGNORECASE),
     "tag{s} longer than the standard allows"),
    (re.compile(r"invalid value for VR|not a valid|invalid .*value", re.IGNORECASE),
     "value{s} not valid for {their} VR"),
    # nibabel's notice on importing its DICOM readers: not about the input
    (re.compile(r"experimental", re.IGNORECASE), None),
)


def _kind(message: str) -> str | None:
    for pattern, kind in _KINDS:
        if pattern.search(message):
            return kind
    return "other library warning{s}"


def summarize(messages: list[str]) -> str:
    """One line counting the unusual things in ``messages`` (empty when nothing was)."""
    counts = Counter(kind for kind in map(_kind, messages) if kind is not None)
    parts = []
    for kind, n in counts.items():
        parts.append(f"{n} " + kind.format(s="" if n == 1 else "s",
                                           their="its" if n == 1 else "their"))
    return ", ".join(parts)


_LIBRARY_LOGGERS = ("pydicom", "pylibjpeg", "openjpeg")
# loggers the libraries create on import (pydicom 3's decoders log on their own): made here
# first when a read imports them, so they carry the filter from their first record
_KNOWN_LOGGERS = ("pydicom.pixels.utils", "pydicom.pixels.decoders.base",
                  "pydicom.pixels.encoders.base", "pylibjpeg.utils", "openjpeg.utils")
_reading = threading.local()  # .sink: the messages of the read in progress on this thread
_warnings_lock = threading.RLock()  # Python's warning filters are one per process


class _Capture(logging.Filter):
    """Put on the libraries' loggers: a record logged by a thread that is reading an input
    goes to that read (errors' messages, not their tracebacks, join its messages; warnings go
    to the ``medsr.io`` log at INFO) and no further. Records of other threads pass on as
    usual. A logger's filters run in the logging thread, so concurrent reads stay apart."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(_reading, "sink", None)
        if sink is None:
            return True
        messages, path = sink
        text = record.getMessage().strip()
        if record.levelno >= logging.ERROR:
            messages.append(text)
        elif record.levelno >= logging.WARNING:
            log.info("%s: %s", path, text.splitlines()[0] if text else "")
        return False


_CAPTURE = _Capture()


def _capture_library_loggers() -> None:
    """Filter the library loggers, each one: a parent's filters do not see the records its
    children log."""
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in _LIBRARY_LOGGERS] + [*_LIBRARY_LOGGERS, *_KNOWN_LOGGERS]
    for name in names:
        logger = logging.getLogger(name)
        if _CAPTURE not in logger.filters:
            logger.addFilter(_CAPTURE)


@contextmanager
def quiet_libraries(path: str | Path) -> Iterator[list[str]]:
    """Capture library warnings raised while reading ``path`` and log them instead.

    Thread-safe: library log records go to the read of the thread that logged them. Python's
    warning filters are one per process, so the reads of several threads take turns here
    (reading is mostly Python bytecode under the GIL anyway).

    Yields:
        The list the captured messages are appended to (for callers that want them).
    """
    messages: list[str] = []
    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outer = getattr(_reading, "sink", None)
        _reading.sink = (messages, path)
        _capture_library_loggers()
        try:
            yield messages
        finally:
            _reading.sink = outer
            _capture_library_loggers()  # any logger the read's imports created
            messages.extend(str(w.message).strip() for w in caught)
    seen = set()
    for text in messages:
        if text and text not in seen and _kind(text) is not None:
            seen.add(text)
            log.info("%s: %s", path, text.splitlines()[0])
    summary = summarize(messages)
    if summary:
        log.info("%s: %s", path, summary)
