"""The error types users see: a one-line message naming what was wrong and where."""

from __future__ import annotations


class MlingualityError(ValueError):
    """Bad input (a spec, file, value or key). The message is one line; the CLI prints it alone.

    Attributes:
        exit_status: The command line's exit status for this error (2: the user's input).
    """

    exit_status = 2


class RunFault(MlingualityError):
    """A run stopped by its environment (disk full, I/O error) or a bug, not by bad input.

    The message is one line that says how to resume; the command line exits with status 1.
    """

    exit_status = 1


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: still a KeyboardInterrupt, with a message saying where
    it stopped and how to resume (the command line prints it and exits with status 130)."""


class ModelLoadError(MlingualityError):
    """A model spec could not be loaded; the message is one line and says what to do."""
