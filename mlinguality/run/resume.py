"""Continuing a run: ``--resume`` finishes a run folder with its own config; ``--from`` starts a
new run that reuses another run's finished stages.

A resume that would change the config is refused, naming the first key that differs (a changed
setting would rewrite a finished run's files under its old name); the same change with
``--from RUN_DIR`` starts a new folder instead, copying in every finished stage of ``RUN_DIR``
whose key still matches (:class:`~mlinguality.run.stage_cache.StageLog` checks the checksums).
A finished run resumed is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.stage_cache import damage

SAVED_CONFIG = "config.yaml"


def saved_config(run_dir: Path, flag: str = "--resume") -> RunConfig:
    """The config a run folder was run with (its paths absolute, as the run saved them)."""
    if not (run_dir / SAVED_CONFIG).is_file():
        raise MlingualityError(f"{flag} {run_dir}: no {SAVED_CONFIG} there (not a run folder)")
    config = RunConfig.load(run_dir / SAVED_CONFIG).with_absolute_paths()
    named = re.fullmatch(rf"{re.escape(config.name)}-\d{{8}}-\d{{6}}(-\d+)?", run_dir.name)
    if not named and not (run_dir / "stages.json").is_file():
        raise MlingualityError(
            f"{flag} {run_dir}: not a run folder (no stages.json, and its name is not "
            f"{config.name}-YYYYmmdd-HHMMSS); to run that config, `mlinguality run "
            f"{run_dir / SAVED_CONFIG}`"
        )
    return config


def _leaves(config: RunConfig) -> dict[str, Any]:
    """``{dotted key: value}`` of every setting, in config order."""
    out: dict[str, Any] = {}
    for name, value in config.to_dict().items():
        if dataclasses.is_dataclass(getattr(config, name)):  # a section
            out |= {f"{name}.{key}": item for key, item in value.items()}
        else:
            out[name] = value
    return out


def first_difference(old: RunConfig, new: RunConfig) -> tuple[str, Any, Any] | None:
    """The first dotted key (in config order) whose value differs, with both values.

    >>> first_difference(RunConfig(), RunConfig().with_overrides(["ablation.mode=mean"]))
    ('ablation.mode', 'zero', 'mean')
    """
    before, after = _leaves(old), _leaves(new)
    for key, value in before.items():
        if after.get(key) != value:
            return key, value, after.get(key)
    return None


def check_same_config(config: RunConfig, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with a config other than its own."""
    difference = first_difference(saved_config(run_dir), config)
    if difference is None:
        return
    key, old, new = difference
    raise MlingualityError(
        f"--resume {run_dir}: {key} would change from {old!r} (its {SAVED_CONFIG}) to {new!r}; "
        f"a resume finishes a run with its own config, so drop the change, or start a new run "
        f"that reuses this one's finished stages: `--from {run_dir}` instead of `--resume`"
    )


def source_run(run_dir: Path) -> Path:
    """Check a ``--from`` folder: a run folder with a stage record."""
    saved_config(run_dir, "--from")
    if not (run_dir / "stages.json").is_file():
        raise MlingualityError(f"--from {run_dir}: no stages.json there (no stage ever finished)")
    return run_dir


def is_finished(run_dir: Path, keys: dict[str, str], names: list[str]) -> bool:
    """Whether every stage in ``names`` is done in ``run_dir`` under ``keys``, intact, and the
    report written (a resume then has nothing to do)."""
    try:
        entries = json.loads((run_dir / "stages.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(entries, dict):
        return False
    for name in names:
        entry = entries.get(name)
        if not isinstance(entry, dict) or entry.get("key") != keys[name]:
            return False
        if entry.get("status", "done") != "done" or damage(run_dir, entry.get("files")):
            return False
    return all((run_dir / name).is_file() for name in ("summary.json", "report.md"))
