"""Collection checkpoints beside the stage cache, and the lock that gives them to one run at a time."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def checkpoint_dir(home: Path, run_dir: Path, stage: str, key: str, batch_tokens: int):
    """Where a stage's checkpoints go, and the lock that reserves it (:func:`release` it).

    Checkpoints of a killed collection live beside the cache, so any rerun with the same settings
    resumes them. The batch plan is part of a checkpoint, so another ``batch_tokens`` starts a
    fresh one (the old one is removed). A run that finds another live run collecting the same
    stage checkpoints into its own folder instead, so the two never write the same files.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(home / f".partial-{stage}-{key}.lock"))
    partial = home / f".partial-{stage}-{key}-b{batch_tokens}"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another run is collecting the same statistics; checkpointing in %s", run_dir)
        return run_dir / partial.name, lock
    for other in home.glob(f".partial-{stage}-{key}-b*"):
        if other != partial:
            shutil.rmtree(other, ignore_errors=True)
    return partial, lock


def release(lock, home: Path, run_dir: Path) -> None:
    """Release a checkpoint lock (a private one in the run folder is removed too)."""
    if lock.is_locked:
        lock.release()
    if home == run_dir:  # a private lock file: nobody else can be waiting on it
        Path(lock.lock_file).unlink(missing_ok=True)
