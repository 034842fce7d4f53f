"""Every fixed choice of the toolkit, spelled once as a ``Literal`` (torch-free).

Config fields, library checks and the command line's ``choices=`` all derive from these:

>>> choices(Positions)
('all', 'last', 'word_final')
>>> cli_choices(WandbMode)
('online', 'offline', 'disabled')
"""

from __future__ import annotations

import typing
from typing import Literal

Dtype = Literal["float32", "bfloat16", "float16"]
"""Model and evaluation precision (converted to a torch dtype once, in ``load_model``)."""

Positions = Literal["all", "last", "word_final"]
"""Which token positions collection counts (docs/method.md)."""

PaddingSide = Literal["left", "right"]

TooLong = Literal["error", "truncate"]
"""What to do with a text longer than the model's context."""

TsvQuoting = Literal["literal", "csv"]
"""How a TSV corpus reads quote marks: as text, or with CSV quoting rules (``corpus.tsv_quoting``)."""

AblationMode = Literal["zero", "mean"]
"""What a run's ablation writes at the selected neurons (``ablation.mode``)."""

AblationWrite = Literal[AblationMode, "values"]
"""What the library's ablation hooks write: ``AblationMode``, or values the caller gives."""

AblationPositions = Literal["all", "skip_first"]
"""Positions an ablation writes: every one, or all but the first (the BOS)."""

Deactivate = Literal["zero", "mean"]
"""Where steering sends the source language's neurons."""

Activate = Literal["mean", "max", "quantile"]
"""Where steering sends the target language's neurons."""

SteeringPositions = Literal["all", "prompt", "generated"]
"""Which positions a steering intervention writes."""

SteeringMethod = Literal["none", "neurons", "random-neurons", "direction", "random-direction"]
"""What a steering row did: nothing, the selected neurons, activity-matched random neurons, the
language direction (difference of mean residuals), or a random direction of the same norm."""

WandbMode = Literal["auto", "online", "offline", "disabled"]
"""The W&B mirror: ``auto`` is online with an API key, else offline."""


def choices(literal: typing.Any) -> tuple[str, ...]:
    """The values of a ``Literal`` (or of ``Literal | None``), in order."""
    values = []
    for arg in typing.get_args(literal):
        values += list(choices(arg)) if typing.get_args(arg) else [arg]
    return tuple(value for value in values if value is not None and value is not type(None))


def cli_choices(literal: typing.Any) -> tuple[str, ...]:
    """A ``Literal``'s values for a command-line flag (``auto`` is the config's default, not a flag)."""
    return tuple(value for value in choices(literal) if value != "auto")
