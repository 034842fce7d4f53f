"""Markdown for the reports: numbers formatted once, tables from pandas (tabulate)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number as ``spec``, ``n/a`` for missing or NaN, anything else as ``str``.

    >>> fmt(0.12345), fmt(None), fmt(float("nan"), "+.2f")
    ('0.123', 'n/a', 'n/a')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> list[str]:
    """A pandas frame as GitHub Markdown table lines (tabulate); NaN and None read ``n/a``."""
    cells = frame.astype(object).where(frame.notna(), "n/a")
    return cells.to_markdown(index=False, tablefmt="github", floatfmt=floatfmt).splitlines()


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Rows of already formatted cells as Markdown table lines (kept as written)."""
    frame = pd.DataFrame([[str(cell) for cell in row] for row in rows], columns=header)
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True).splitlines()
