"""The one exception type for user mistakes and unusable input."""

from __future__ import annotations


class MedsrError(Exception):
    """A problem with the user's input or request, reported as one line without a traceback."""
