"""Logging for the command line: medsr's own warnings by default, everything with ``-v``.

Library warnings met while reading inputs (pydicom value lengths, nibabel notices) are sent to
the ``medsr.io`` logger at INFO by :mod:`medsr.io.quiet`, with a one-line summary per input, so
they only reach the terminal in verbose mode.
"""

from __future__ import annotations

import logging
import sys

HANDLER_NAME = "medsr-cli"


class _Filter(logging.Filter):
    """medsr's records from ``medsr_level``, everything else from ``other_level``."""

    def __init__(self, medsr_level: int, other_level: int) -> None:
        super().__init__()
        self.medsr_level, self.other_level = medsr_level, other_level

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "medsr" or record.name.startswith("medsr.")
        return record.levelno >= (self.medsr_level if ours else self.other_level)


def setup_logging(verbose: bool = False) -> None:
    """Send log records to stderr for a CLI run (calling it again replaces the setup).

    Args:
        verbose: show medsr's INFO (what was read, volumes found, library warnings met while
            reading) and the libraries' own warnings; otherwise only medsr's warnings and
            errors, and the libraries' errors.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s" if verbose
                                           else "%(message)s"))
    handler.addFilter(_Filter(logging.INFO, logging.WARNING) if verbose
                      else _Filter(logging.WARNING, logging.ERROR))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.getLogger("medsr").setLevel(logging.INFO)
    logging.captureWarnings(True)  # stray Python warnings become 'py.warnings' records
