"""``mlinguality corpus ...`` subcommands."""

from __future__ import annotations

import argparse


def add_corpus_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``corpus info`` (filled in by the corpus issue)."""
    commands.add_parser("corpus", help="inspect parallel corpora")
