"""Read an offline W&B run back with wandb's own record protobufs (tests only).

A ``run-ID.wandb`` file is wandb's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1,
version 0) followed by LevelDB-log framed records (32 KiB blocks; each chunk has a 7-byte
header: crc32c, little-endian length, type FULL/FIRST/MIDDLE/LAST), each record a serialised
``wandb.proto.wandb_internal_pb2.Record``. wandb 0.31 no longer ships a Python reader (its
datastore moved into the Go core), so this decodes the framing and lets protobuf parse records.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _chunks(data: bytes):
    """Yield the payload of every logical record in a LevelDB-log byte string."""
    assert data.startswith(_HEADER), "not a .wandb transaction log"
    offset, pending = len(_HEADER), b""
    while offset + 7 <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < 7:  # block trailer padding
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        payload = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            offset += room - 7  # zero padding up to the next block
            continue
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What an offline run recorded: config, history rows, summary, group and tags."""

    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_offline_run(folder: Path, timeout_s: float = 60.0) -> OfflineRun:
    """Parse ``folder/run-*.wandb`` once wandb's core has written the run's exit record.

    ``finish()`` returns when the run is closed, but on a loaded machine the log was once read
    before its last records were flushed; poll (up to ``timeout_s``) for the exit record.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        run = _parse_offline_run(folder)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _parse_offline_run(folder: Path) -> OfflineRun:
    """Parse ``folder/run-*.wandb`` (folder: an ``offline-run-*`` directory) as it is now."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun()
    for payload in _chunks(log.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":  # the first run record has everything; later ones only updates
            run.group = record.run.run_group or run.group
            run.name = record.run.display_name or run.name
            run.tags = list(record.run.tags) or run.tags
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
