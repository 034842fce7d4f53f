"""MkDocs hooks: generated reference pages, and every page in docs/ in the navigation.

- ``<!-- generated: config-reference -->`` becomes the config key table
  (:func:`mlinguality.cli.reference.config_markdown`), ``<!-- generated: cli-reference -->`` every
  subcommand's ``--help`` (:func:`mlinguality.cli.reference.cli_markdown`), so the reference is
  rebuilt from the code on every build.
- Pages present in docs/ but missing from ``nav`` (a new page another change adds, such as
  gpus.md) are appended under "More", so ``mkdocs build --strict`` never hides a page.
"""

from __future__ import annotations

from pathlib import Path

_GENERATED = {
    "<!-- generated: config-reference -->": "config_markdown",
    "<!-- generated: cli-reference -->": "cli_markdown",
}


def _nav_files(nav) -> set[str]:
    found: set[str] = set()
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found |= _nav_files(value)
        elif isinstance(value, str):
            found.add(value)
    return found


def on_config(config, **kwargs):
    listed = _nav_files(config["nav"])
    docs = Path(config["docs_dir"])
    extra = sorted(
        path.relative_to(docs).as_posix()
        for path in docs.rglob("*.md")
        if path.relative_to(docs).as_posix() not in listed
    )
    if extra and config["nav"] is not None:
        config["nav"].append({"More": extra})
    return config


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    from mlinguality.cli import reference
    from mlinguality.cli.main import build_parser

    generated = {
        "config_markdown": reference.config_markdown,
        "cli_markdown": lambda: reference.cli_markdown(build_parser()),
    }
    for marker, function in _GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generated[function]())
    return markdown
