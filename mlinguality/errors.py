"""The one error type users see: a one-line message naming what was wrong and where."""

from __future__ import annotations


class MlingualityError(ValueError):
    """Bad input (a spec, file, value or key). The message is one line; the CLI prints it alone."""
