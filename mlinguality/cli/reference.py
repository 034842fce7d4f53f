"""The config and CLI reference, generated from the typed config and the argument parser.

``mlinguality config keys`` prints :func:`config_keys`; the docs site renders
:func:`config_markdown` and :func:`cli_markdown` at build time, so the reference never drifts from
the code: every key's type and default come from the dataclass, its help from the
``Attributes:`` section of the section's docstring.

>>> rows = {row.key: row for row in config_keys()}
>>> rows["selectivity.top_rate"].default, rows["collection.positions"].type
('0.01', "one of 'all', 'last', 'word_final'")
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass

from mlinguality.run.config import RunConfig
from mlinguality.sections import type_name

_ATTRIBUTE = re.compile(r"^(\w+): (.*)$")


@dataclass(frozen=True)
class KeyHelp:
    """One config key: dotted name, type, default (as YAML would write it) and help text."""

    key: str
    type: str
    default: str
    help: str


def _attribute_help(cls: type) -> dict[str, str]:
    """``name -> text`` from the ``Attributes:`` section of a Google-style class docstring."""
    doc = inspect.getdoc(cls) or ""
    helps: dict[str, str] = {}
    inside, current = False, None
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break
        match = (
            _ATTRIBUTE.match(line.strip())
            if line.startswith("    ") and not line.startswith("        ")
            else None
        )
        if match:
            current = match.group(1)
            helps[current] = match.group(2)
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return {name: re.sub(r"``([^`]*)``", r"`\1`", text) for name, text in helps.items()}


def _yaml(value: object) -> str:
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def config_keys(cls: type = RunConfig, prefix: str = "", instance: object = None) -> list[KeyHelp]:
    """Every leaf key of the config with its type, default and help, in declaration order."""
    instance = instance if instance is not None else cls()
    hints = typing.get_type_hints(cls)
    helps = _attribute_help(cls)
    rows: list[KeyHelp] = []
    for item in dataclasses.fields(cls):
        key = f"{prefix}{item.name}"
        value = getattr(instance, item.name)
        if dataclasses.is_dataclass(hints[item.name]):
            rows += config_keys(hints[item.name], key + ".", value)
        else:
            rows.append(
                KeyHelp(key, type_name(hints[item.name]), _yaml(value), helps.get(item.name, ""))
            )
    return rows


def config_markdown() -> str:
    """The config reference as Markdown: one table per section."""
    lines: list[str] = []
    section = None
    for row in config_keys():
        head = row.key.split(".")[0] if "." in row.key else "(top level)"
        if head != section:
            section = head
            lines += ["", f"### `{section}`" if "." in row.key else "### Top level", ""]
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines.append(
            f"| `{row.key}` | {row.type} | `{row.default}` | {row.help.replace('|', '/')} |"
        )
    return "\n".join(lines).strip() + "\n"


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """Every subcommand's ``--help`` of ``parser`` (:func:`mlinguality.cli.main.build_parser`),
    as Markdown sections (the CLI reference)."""
    lines = ["## `mlinguality`", "", "```text", _help(parser), "```"]

    def walk(command: argparse.ArgumentParser, path: str) -> None:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    full = f"{path} {name}"
                    lines.extend(["", f"## `{full}`", "", "```text", _help(sub), "```"])
                    walk(sub, full)

    walk(parser, "mlinguality")
    return "\n".join(lines) + "\n"


def _help(parser: argparse.ArgumentParser) -> str:
    import os

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # stable wrapping, whatever the terminal
    try:
        return parser.format_help().rstrip()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
