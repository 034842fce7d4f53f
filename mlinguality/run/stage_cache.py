"""The stage record of a run folder and the stage cache: reuse only what is verifiably intact.

``stages.json`` in a run folder holds one entry per stage::

    {"collect": {"key": "3f1c...", "status": "done", "origin": "computed", "seconds": 20.1,
                 "files": {"stats/en.safetensors": [12345, "<sha256>"], ...}}, ...}

``status`` is ``running`` while a stage computes (a run killed with SIGKILL leaves it so),
``interrupted`` after Ctrl-C, ``failed`` after an error, and ``done`` once every output is written;
only then are the size and sha256 of every output recorded. A stage is reused (from the folder on
``--resume``, or from ``cache_dir/{stage}-{key}/``) only when its outputs still have the recorded
sizes and checksums; a damaged entry is rebuilt with a warning.

Files are *copied* between the cache and run folders, never hard-linked, so editing one run's
CSV cannot change the cache or another run. Cache entries are written into a temp folder and
renamed into place; temp folders of killed processes are removed on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mlinguality.files import pid_alive, sha256, write_text_atomic

logger = logging.getLogger(__name__)

_RECORD = "record.json"  # a cache entry's own copy of its stage entry (files and checksums)


def fingerprint(folder: Path, names: list[str]) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of the files (and files under folders) in ``names``."""
    files: dict[str, list] = {}
    for name in names:
        path = folder / name
        paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for item in paths:
            files[item.relative_to(folder).as_posix()] = [item.stat().st_size, sha256(item)]
    return files


def damage(folder: Path, files: dict[str, list] | None) -> str | None:
    """None when every recorded file is present with its size and checksum, else what is wrong."""
    if not files:
        return "no checksums recorded"
    if not isinstance(files, dict):
        return f"its record of files is {type(files).__name__}, not a mapping"
    for name, record in files.items():
        if not (isinstance(record, list) and len(record) == 2 and isinstance(record[0], int)):
            return f"the record of {name} is not [size, sha256]"
        size, digest = record
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
        if sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to a temp file beside ``path`` and rename it into place."""
    write_text_atomic(path, json.dumps(data, indent=1))


def remove(path: Path) -> None:
    """Remove a file or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def copy(source: Path, target: Path) -> None:
    """Copy a file or folder tree into place (a fresh inode: never shared with ``source``)."""
    remove(target)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(source, target)


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove ``.*.tmp-PID`` entries in ``folder`` whose process is gone; return them."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.tmp-*"):
        pid = path.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            remove(path)
            removed.append(path)
    if removed:
        logger.info("removed %d temp folder(s) of killed runs in %s", len(removed), folder)
    return removed


def read_entries(path: Path) -> dict[str, dict]:
    """The stage entries of a ``stages.json`` (none if it is absent; unreadable ones are
    dropped with a warning, so their stages are recomputed, never trusted)."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("%s is unreadable (%s); its stages are recomputed", path, error)
        return {}
    if not isinstance(entries, dict):
        logger.warning("%s is not a mapping of stages; its stages are recomputed", path)
        return {}
    return {name: entry for name, entry in entries.items() if isinstance(entry, dict)}


class StageLog:
    """``stages.json`` of a run folder, and the stage cache behind it.

    Args:
        run_dir: The run folder.
        cache_dir: The stage cache (``None``: no reuse across runs).
        cache_writable: Store finished stages in the cache (a read-only cache is still read).
        source: Another run's stage record (``mlinguality run --from RUN_DIR``): its finished
            stages whose keys match are copied in, before the cache is asked.
    """

    def __init__(
        self,
        run_dir: Path,
        cache_dir: Path | None,
        cache_writable: bool = True,
        source: StageLog | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.cache_writable = cache_writable and cache_dir is not None
        self.source = source
        self.path = run_dir / "stages.json"
        self.entries: dict[str, dict] = read_entries(self.path)
        self.current: str | None = None
        self.started = False  # a stage of this run was reached (computed, copied or kept)

    @property
    def finished(self) -> dict[str, dict]:
        """The entries of finished stages, in pipeline order."""
        return {k: v for k, v in self.entries.items() if v.get("status", "done") == "done"}

    def mark(self, status: str, **extra: object) -> None:
        """Record the status (``interrupted``, ``failed``) of the stage now running, if any."""
        if self.current is not None:
            self.entries[self.current].update(status=status, **extra)
            try:
                self._save()
            except OSError:  # a full disk: the entry stays "running", which resumes the same
                logger.debug("could not record %s status of stage %s", status, self.current)

    def _save(self) -> None:
        write_json_atomic(self.path, self.entries)

    def _usable_here(self, stage: str, key: str) -> bool:
        entry = self.entries.get(stage)
        if not entry or entry.get("key") != key or entry.get("status", "done") != "done":
            return False
        problem = damage(self.run_dir, entry.get("files"))
        if problem is not None:
            logger.warning(
                "stage %s in %s is damaged (%s); recomputing it", stage, self.run_dir, problem
            )
            return False
        return True

    def _usable_cache(self, cached: Path | None) -> bool:
        if cached is None or not cached.is_dir():
            return False
        try:
            files = json.loads((cached / _RECORD).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            files = None
        problem = damage(cached, files)
        if problem is None:
            return True
        logger.warning("cache entry %s is damaged (%s); rebuilding it", cached, problem)
        if self.cache_writable:
            shutil.rmtree(cached, ignore_errors=True)
        return False

    def run(self, stage: str, key: str, names: Sequence[str], compute: Callable[[], None]) -> str:
        """Reuse ``stage`` (whose outputs are ``names``) from this folder or the cache, else
        compute it; return the origin."""
        names = list(names)
        self.started = True
        if self._usable_here(stage, key):
            logger.info("stage %s: already done in %s", stage, self.run_dir)
            return "resumed"
        cached = self.cache_dir / f"{stage}-{key}" if self.cache_dir else None
        start = time.perf_counter()
        self.current = stage
        self.entries[stage] = {"key": key, "status": "running", "pid": os.getpid()}
        self._save()
        if self.source is not None and self.source._usable_here(stage, key):
            logger.info("stage %s: reusing it from %s", stage, self.source.run_dir)
            for name in names:
                copy(self.source.run_dir / name, self.run_dir / name)
            origin = f"run:{self.source.run_dir.name}"
        elif self._usable_cache(cached):
            logger.info("stage %s: reusing %s", stage, cached)
            for name in names:
                copy(cached / name, self.run_dir / name)
            origin = f"cache:{cached.name}"
        else:
            for name in names:
                remove(self.run_dir / name)
            compute()
            origin = "computed"
        files = fingerprint(self.run_dir, names)
        if origin == "computed" and cached is not None and self.cache_writable:
            self._store(cached, names, files)
        self.entries[stage] = {
            "key": key,
            "status": "done",
            "seconds": round(time.perf_counter() - start, 3),
            "origin": origin,
            "files": files,
        }
        self.current = None
        self._save()
        return origin

    def _store(self, cached: Path, names: list[str], files: dict[str, list]) -> None:
        """Copy a finished stage's outputs into the cache atomically (temp folder, then rename)."""
        tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}")
        try:
            remove(tmp)
            tmp.mkdir(parents=True)
            for name in names:
                copy(self.run_dir / name, tmp / name)
            write_json_atomic(tmp / _RECORD, {"files": files})
            os.replace(tmp, cached)
        except OSError as error:  # a full disk, or another process stored the same stage first
            shutil.rmtree(tmp, ignore_errors=True)
            if not cached.is_dir():
                logger.warning("could not store stage in the cache %s (%s)", cached, error)
