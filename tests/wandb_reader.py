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
    # logged artifacts: name, type, aliases, files (manifest paths), history rows before it
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    # metric definitions (define_metric): name or glob -> {"step_metric", "summary"}
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)


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
        elif kind == "artifact":
            art = record.artifact
            if art.type.startswith("run_table") or art.name.startswith("run-"):
                continue  # wandb's own per-table artifacts
            run.artifacts.append(
                {
                    "name": art.name,
                    "type": art.type,
                    "aliases": list(art.aliases),
                    "files": sorted(entry.path for entry in art.manifest.contents),
                    "after_history_rows": len(run.history),
                }
            )
        elif kind == "metric":
            name = record.metric.name or record.metric.glob_name
            run.metrics[name] = {
                "step_metric": record.metric.step_metric,
                "summary_none": record.metric.summary.none,
            }
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def check_run_mirror(run_dir: Path) -> OfflineRun:
    """Assert what a runner's offline W&B run must show; return it for further checks.

    - the config first, with the mode actually used (``tracking.wandb`` is not ``auto``);
    - live progress: one ``progress/stage`` row per stage (1, 2, ...), all logged before any
      result (per-layer rows, tables, artifacts);
    - summary keys with one meaning: no per-layer series and no ``layer`` in the summary; the
      headline numbers equal ``summary.json``'s;
    - tables and images in rows without a ``layer`` stamp;
    - artifacts for the statistics, the selected neurons, the report and the config.
    """
    from mlinguality.run.summary import flatten

    (folder,) = (Path(run_dir) / "wandb").glob("offline-run-*")
    run = read_offline_run(folder)
    assert run.exit_code == 0
    assert run.config["tracking"]["wandb"] == "offline"
    stages = json.loads((Path(run_dir) / "stages.json").read_text())
    progress = [i for i, row in enumerate(run.history) if "progress/stage" in row]
    assert [run.history[i]["progress/stage"] for i in progress] == list(range(1, len(stages) + 1))
    first_result = min(i for i, row in enumerate(run.history) if "layer" in row)
    assert max(progress) < first_result
    assert all(art["after_history_rows"] > max(progress) for art in run.artifacts)
    per_layer = {
        key for row in run.history if "layer" in row for key in row if not key.startswith("_")
    } - {"layer"}  # wandb's own _step, _runtime, _timestamp are in every row
    assert per_layer and all(key.startswith("per_layer/") for key in per_layer), per_layer
    assert not per_layer & set(run.summary) and "layer" not in run.summary
    summary = flatten(json.loads((Path(run_dir) / "summary.json").read_text()))
    for key, value in summary.items():
        if key.split("/")[0] in ("selectivity", "ablation") and isinstance(value, float):
            assert run.summary[key] == value, key
    for row in run.history:
        if any(key.endswith("/_type") for key in row):
            assert "layer" not in row, sorted(row)
    kinds = {art["type"]: art for art in run.artifacts}
    assert set(kinds) >= {"stats", "selected-neurons", "report", "config"}, kinds
    assert any(name.startswith("stats/") for name in kinds["stats"]["files"])
    assert "selected_neurons.csv" in kinds["selected-neurons"]["files"]
    if (Path(run_dir) / "neurons" / "neurons.json").is_file():  # the examples stage ran
        assert any(k.startswith("neurons/table/") for row in run.history for k in row)
        assert any(k.startswith("neurons/output_language/") for row in run.history for k in row)
        assert "neurons/neurons.json" in kinds["neuron-cards"]["files"]
        assert any(key.startswith("neurons/own_share/") for key in run.summary)
    assert "report.md" in kinds["report"]["files"] and kinds["config"]["files"] == ["config.yaml"]
    assert all(Path(run_dir).name in art["aliases"] for art in run.artifacts)
    return run
