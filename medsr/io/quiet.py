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


class _Records(logging.Handler):
    """A library logger's records while ``path`` is read: errors' messages (not their
    tracebacks) join ``messages``; the rest go to the ``medsr.io`` log at INFO, unsummarised
    (pydicom's warnings mostly repeat the Python warnings already captured)."""

    def __init__(self, messages: list[str], path: str | Path) -> None:
        super().__init__(logging.DEBUG)
        self.messages, self.path = messages, path

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip()
        if record.levelno >= logging.ERROR:
            self.messages.append(text)
        elif record.levelno >= logging.WARNING:
            log.info("%s: %s", self.path, text.splitlines()[0] if text else "")


@contextmanager
def quiet_libraries(path: str | Path) -> Iterator[list[str]]:
    """Capture library warnings raised while reading ``path`` and log them instead.

    Yields:
        The list the captured messages are appended to (for callers that want them).
    """
    messages: list[str] = []
    pydicom_log = logging.getLogger("pydicom")  # its decoders log each failure with a traceback
    records, propagate = _Records(messages, path), pydicom_log.propagate
    pydicom_log.addHandler(records)
    pydicom_log.propagate = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            pydicom_log.removeHandler(records)
            pydicom_log.propagate = propagate
            messages.extend(str(w.message).strip() for w in caught)
            seen = set()
            for text in messages:
                if text and text not in seen and _kind(text) is not None:
                    seen.add(text)
                    log.info("%s: %s", path, text.splitlines()[0])
            summary = summarize(messages)
            if summary:
                log.info("%s: %s", path, summary)
