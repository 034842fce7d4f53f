"""Config overrides from the command line and ``wandb agent``, and the keys they may name.

>>> agent_overrides(["--selectivity.top_rate=0.02"])
['selectivity.top_rate=0.02']
>>> "ablation.mode" in override_keys()
True
"""

from __future__ import annotations

import dataclasses
import typing

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig


def agent_overrides(argv: list[str]) -> list[str]:
    """Turn ``--section.key=value`` arguments (what ``wandb agent`` passes) into overrides.

    >>> agent_overrides(["--selectivity.top_rate=0.02", "--corpus.langs=['en', 'ru']"])
    ['selectivity.top_rate=0.02', "corpus.langs=['en', 'ru']"]
    """
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not (arg.startswith("--") and sep and len(key) > 2):
            raise MlingualityError(
                f"unrecognized argument {arg!r} (config overrides are --section.key=value)"
            )
        overrides.append(f"{key[2:]}={value}")
    return overrides


def override_keys() -> list[str]:
    """Every dotted leaf key a ``--set`` override (or a sweep parameter) may name."""

    def walk(cls: type, prefix: str) -> list[str]:
        keys = []
        for name, hint in typing.get_type_hints(cls).items():
            if name.startswith("_"):
                continue
            key = f"{prefix}{name}"
            keys += walk(hint, key + ".") if dataclasses.is_dataclass(hint) else [key]
        return keys

    return walk(RunConfig, "")
