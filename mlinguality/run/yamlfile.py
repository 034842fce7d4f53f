"""Strict YAML files: one-line errors naming the file and line, and no repeated keys.

Merge keys (``<<: *defaults``) work as in ``yaml.safe_load``: a key written in the mapping
overrides the merged one; only a key written twice in one mapping is refused.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml

from mlinguality.errors import MlingualityError

_MERGE = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *anchor`: flattened by SafeLoader below
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {line})")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    pass


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse a YAML file strictly: one-line errors name ``what``, the file and the line.

    A key repeated in one mapping is an error naming both lines (plain PyYAML silently keeps the
    last one, so a repeated ``corpus:`` section would drop the first).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MlingualityError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise MlingualityError(f"{what} {path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as error:
        raise MlingualityError(f"{what} {path}: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise MlingualityError(f"{what} {path}: cannot read ({error.strerror})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as error:
        raise MlingualityError(f"{what} {path}: {error}; keep one") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise MlingualityError(f"{what} {path}:{line} not valid YAML ({problem})") from None
