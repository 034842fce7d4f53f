"""How a run that stops says so: the stage's status in ``stages.json`` and one line to print."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from mlinguality.activations.distributed import world_size
from mlinguality.errors import MlingualityError, RunFault, RunInterrupted
from mlinguality.run.config import RunConfig
from mlinguality.run.stage_cache import StageLog

_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def stop_run(
    error: BaseException, config: RunConfig, run_dir: Path, log: StageLog, fresh: bool
) -> None:
    """Record why a run stopped and raise the one-line error the command line prints."""
    if log.current:
        where = f"at stage {log.current}"
    else:  # between stages: before the first one (seeding, loading), or after the last
        where = "at the report" if log.started else "before the first stage"
    resume = f"resume with `mlinguality run --resume {run_dir}`"
    if world_size() > 1:  # under torchrun: every rank resumes
        resume = (
            f"resume with the same torchrun command and `-m mlinguality run --resume {run_dir}`"
        )
    if fresh and not log.started and isinstance(error, Exception):
        # a new folder holding only config.yaml: nothing to resume, so nothing left behind
        shutil.rmtree(run_dir, ignore_errors=True)
        resume = "run it again"
    if isinstance(error, KeyboardInterrupt):
        log.mark("interrupted")
        raise RunInterrupted(f"interrupted {where}; {resume}") from None
    if isinstance(error, RunFault):  # not the input's fault (a rank lost under torchrun)
        log.mark("failed", error=str(error))
        raise RunFault(f"{error} ({where}; {resume})") from None
    if isinstance(error, MlingualityError):
        log.mark("failed", error=str(error))
        if fresh and not log.finished:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping
            raise error
        raise type(error)(f"{error} ({where}; fix it, then {resume})") from None
    if isinstance(error, OSError):
        log.mark("failed", error=str(error))
        what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        if error.errno in _ENVIRONMENT_ERRORS:
            raise RunFault(
                f"{what} ({where}); free space or fix permissions, then {resume}"
            ) from None
        raise RunFault(f"{what} ({where}); {resume}") from None
    if isinstance(error, Exception):
        log.mark("failed", error=f"{type(error).__name__}: {error}")
        first = (str(error).splitlines() or [""])[0]
        raise RunFault(
            f"{type(error).__name__} {where}: {first} "
            f"(a bug? rerun with -v for the traceback; {resume})"
        ) from error
