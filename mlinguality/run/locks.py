"""Locks of a run: the run folder (one process runs or resumes it at a time), and the collection
checkpoints beside the stage cache (one run collects a key at a time).

A lock is a file holding its owner's pid, locked with ``flock`` and removed when released, so a
finished run leaves no lock file behind. It is removed while still locked, and a process that
locks a file checks it is still the one at that path (else it retries), so a lock removed under a
waiting process is never held by two.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)

RUN_LOCK = ".lock"  # in the run folder, while a process runs or resumes it


class Lock:
    """An exclusive lock on ``path``, taken without waiting; :meth:`release` removes the file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: Path) -> Lock | None:
        """The lock, or None if another process holds it."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:  # released (and removed) between our open and lock
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(path, fd)
            os.close(fd)

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the file, then unlock it (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def holder(path: Path) -> str:
    """The pid written in a lock file (``?`` if unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def lock_run(run_dir: Path) -> Lock:
    """Reserve a run folder for this process (a second run or resume of it stops at once).

    Raises:
        MlingualityError: another live process holds the folder.
    """
    path = run_dir / RUN_LOCK
    lock = Lock.take(path)
    if lock is None:
        raise MlingualityError(
            f"run {run_dir}: process {holder(path)} is running it now; wait for it to finish "
            "(or stop it), then resume"
        )
    return lock


def checkpoint_dir(home: Path, run_dir: Path, stage: str, key: str, batch_tokens: int):
    """Where a stage's checkpoints go, and the lock that reserves it (:func:`release` it).

    Checkpoints of a killed collection live beside the cache, so any rerun with the same settings
    resumes them. The batch plan is part of a checkpoint, so another ``batch_tokens`` starts a
    fresh one (the old one is removed). A run that finds another live run collecting the same
    stage checkpoints into its own folder instead, so the two never write the same files.
    """
    partial = home / f".partial-{stage}-{key}-b{batch_tokens}"
    lock = Lock.take(home / f".partial-{stage}-{key}.lock")
    if lock is None:
        logger.info("another run is collecting the same statistics; checkpointing in %s", run_dir)
        private = Lock.take(run_dir / f".partial-{stage}-{key}.lock")
        return run_dir / partial.name, private
    for other in home.glob(f".partial-{stage}-{key}-b*"):
        if other != partial:
            shutil.rmtree(other, ignore_errors=True)
    return partial, lock


def release(lock: Lock | None) -> None:
    """Release a checkpoint lock (its file goes with it)."""
    if lock is not None:
        lock.release()
