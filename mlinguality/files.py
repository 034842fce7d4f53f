"""File helpers shared by the model cache and the stage cache: checksums, atomic writes, pids."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from typing import Any


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 8 MB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` (``.NAME.tmp-PID``), then rename it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (temp names carry their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def content_digest(path: Path, memo: Path | None = None) -> str:
    """A 16-hex-digit digest of a file's or a folder's contents (every file under it, by name).

    Sizes and modification times detect a change; the sha256 of the bytes decides. With
    ``memo`` (a JSON file), each file's sha256 is remembered beside its size and mtime, so an
    unchanged multi-GB model folder is hashed once, not on every run.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.txt").write_text("one")
    >>> before = content_digest(folder)
    >>> _ = (folder / "a.txt").write_text("two")
    >>> before == content_digest(folder)
    False
    """
    import json

    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    known: dict = {}
    if memo is not None:
        try:
            known = json.loads(Path(memo).read_text())
        except (OSError, ValueError):
            known = {}
    digest = hashlib.sha256()
    changed = False
    for item in files:
        stat = item.stat()
        seen = known.get(str(item))
        if seen is not None and seen[:2] == [stat.st_size, stat.st_mtime_ns]:
            value = seen[2]
        else:
            value = sha256(item)
            known[str(item)] = [stat.st_size, stat.st_mtime_ns, value]
            changed = True
        name = item.name if item == path else item.relative_to(path).as_posix()
        digest.update(f"{name}\0{value}\0".encode())
    if memo is not None and changed:
        with contextlib.suppress(OSError):  # a read-only cache: hash again next time
            write_text_atomic(Path(memo), json.dumps(known))
    return digest.hexdigest()[:16]


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON).

    >>> json_safe({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
