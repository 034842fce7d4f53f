"""The error types users see: a one-line message naming what was wrong and where."""

from __future__ import annotations


class MlingualityError(ValueError):
    """Bad input (a spec, file, value or key). The message is one line; the CLI prints it alone.

    Attributes:
        exit_status: The command line's exit status for this error (2: the user's input).
    """

    exit_status = 2


class ModelLoadError(MlingualityError):
    """A model spec could not be loaded; the message is one line and says what to do."""
