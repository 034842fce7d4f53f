"""The machinery behind every typed config section: type checks, building from dicts, parsing.

A config section is a dataclass deriving from :class:`Section`: its fields are checked against
their type hints when it is built (ints widened to floats, ``Literal`` choices, ``X | None``), then
its :meth:`Section.validate` checks ranges. :func:`build` makes a section (and its nested
sections) from a plain dict, naming the dotted key of any error. Torch-free, so every stage can
define its own section here without importing the runner.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

import yaml

from mlinguality.errors import MlingualityError

_NONE_WORDS = ("none", "null", "~", "")
MAX_SEED = 2**32 - 1  # numpy's legacy seed range, which random and torch both include


class Section:
    """Shared checks of every config dataclass: field types first, then :meth:`validate`."""

    _key: typing.ClassVar[str] = ""  # dotted prefix used in error messages

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            key = f"{self._key}.{item.name}" if self._key else item.name
            value = _check_type(getattr(self, item.name), hints[item.name], key)
            object.__setattr__(self, item.name, value)
        self.validate()

    def validate(self) -> None:
        """Range checks beyond the types; raise MlingualityError naming the key."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a (possibly partial) nested dict; missing keys take their defaults.

        Every key and value is checked here, with errors naming the dotted key, before the
        dataclass is constructed.
        """
        return build(cls, data, cls._key)

    def _check_seed(self, name: str) -> None:
        """A seed every RNG it reaches takes: ``random``, torch (< 2**64, after the offsets
        the stages add to it) and numpy's legacy ``seed`` (< 2**32, the narrowest)."""
        value = getattr(self, name)
        if not 0 <= value <= MAX_SEED:
            self._fail(name, f"must be in [0, {MAX_SEED}] (2**32 - 1), got {value}")

    def _check_finite(self, name: str, low: float | None = None, strict: bool = False) -> None:
        """A finite number (not NaN or inf), above ``low`` (``strict``: not equal to it)."""
        value = getattr(self, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not math.isfinite(item):
                self._fail(name, f"must be a finite number, got {item}")
            if low is not None and (item <= low if strict else item < low):
                self._fail(name, f"must be {'>' if strict else '>='} {low:g}, got {item:g}")

    def _fail(self, name: str, message: str) -> typing.NoReturn:
        key = f"{self._key}.{name}" if self._key else name
        raise MlingualityError(f"{key}: {message}")


def _is_optional(hint: Any) -> bool:
    return _origin(hint) is types.UnionType and type(None) in typing.get_args(hint)


def _origin(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    return types.UnionType if origin is typing.Union else origin


def _strip_optional(hint: Any) -> Any:
    if _is_optional(hint):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner
    return hint


def type_name(hint: Any) -> str:
    if _origin(hint) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    if _is_optional(hint):
        return f"{type_name(_strip_optional(hint))} or null"
    if _origin(hint) is list:
        return "a list"
    if _origin(hint) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` (ints widened to float where a float is wanted) or raise naming ``key``."""
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
    elif _is_optional(hint):
        return None if value is None else _check_type(value, _strip_optional(hint), key)
    elif _origin(hint) is Literal:
        if value in typing.get_args(hint) and isinstance(value, str):
            return value
    elif _origin(hint) is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return [_check_type(entry, item, f"{key}[{i}]") for i, entry in enumerate(value)]
    elif _origin(hint) is dict:
        key_hint, value_hint = typing.get_args(hint)
        if isinstance(value, dict):
            return {
                _check_type(k, key_hint, key): _check_type(v, value_hint, f"{key}.{k}")
                for k, v in value.items()
            }
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise MlingualityError(f"{key}: expected {type_name(hint)}, got {value!r}")


def parse_value(raw: str, hint: Any, key: str) -> Any:
    """Parse a command-line string for a field of type ``hint`` (YAML scalars, ``a,b`` lists).

    Strings stay verbatim (``--model.spec=1e3`` is the string ``"1e3"``); ``None`` and ``null``
    clear optional values (``wandb agent`` writes Python's ``None``).
    """
    text = raw.strip()
    if _is_optional(hint) and text.lower() in _NONE_WORDS:
        return None
    inner = _strip_optional(hint)
    if inner is str or _origin(inner) is Literal:
        return text
    if _origin(inner) is list and not text.startswith("["):
        parts = [part.strip() for part in text.split(",") if part.strip()]
        (item,) = typing.get_args(inner)
        if item is str or _origin(item) is Literal:
            return parts
        return [parse_value(part, item, f"{key}[{i}]") for i, part in enumerate(parts)]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise MlingualityError(f"{key}: cannot parse {raw!r} as {type_name(hint)}") from None
    return value


def build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise MlingualityError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in names:
            raise MlingualityError(_unknown(key, [f"{prefix}.{n}" if prefix else n for n in names]))
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, key)
        else:  # checked here too, so the error is ours even where __init__ is type-checked
            kwargs[name] = _check_type(value, hint, key)
    return cls(**kwargs)


def locate(cls: type, data: dict, key: str) -> tuple[Any, dict, str]:
    """The type hint, parent dict and leaf name of a dotted ``key``."""
    parts = key.split(".")
    node, hint = data, cls
    for depth, part in enumerate(parts):
        names = [item.name for item in dataclasses.fields(hint)]
        if part not in names:
            prefix = ".".join(parts[:depth])
            raise MlingualityError(_unknown(key, [f"{prefix}.{n}" if prefix else n for n in names]))
        child = typing.get_type_hints(hint)[part]
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(child):
                raise MlingualityError(f"{key}: is a section; set one of its keys ({key}.KEY=...)")
            return child, node, part
        if not dataclasses.is_dataclass(child):
            raise MlingualityError(_unknown(key, [".".join(parts[: depth + 1])]))
        node, hint = node[part], child
    raise AssertionError("unreachable")


def unknown_key_message(key: str, known: list[str]) -> str:
    """``unknown key 'x' (did you mean 'y'?)``, for every place that checks a dotted key."""
    return _unknown(key, known)


def _sections(cls: type = None) -> list[type]:
    """Every config section class defined so far (the subclasses of :class:`Section`)."""
    out = []
    for sub in (cls or Section).__subclasses__():
        out += [sub, *_sections(sub)]
    return out


def _unknown(key: str, known: list[str]) -> str:
    section, _, leaf = key.rpartition(".")
    elsewhere = sorted(
        f"{sub._key}.{leaf}"
        for sub in _sections()
        if sub._key and sub._key != section and dataclasses.is_dataclass(sub)
        and leaf in {item.name for item in dataclasses.fields(sub)}
    )  # fmt: skip
    if elsewhere:  # the right key in the wrong section: name where it lives
        return f"unknown key {key!r} ({leaf!r} is a key of {' and '.join(elsewhere)})"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known: {', '.join(known)})"
