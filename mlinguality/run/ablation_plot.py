"""The ablation heatmap of a run, drawn by the report from ``ablation.json`` (only with
``plots: true``), so the ablate stage's cached outputs do not depend on whether plots are on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mlinguality.ablation.evaluation import LanguageLoss
from mlinguality.ablation.matrix import ACTIVITY_ROW, RANDOM_ROW, AblationMatrix
from mlinguality.ablation.outputs import plot_matrices

HEATMAP = "ablation.png"  # in the run folder, beside ablation.json


def _loss(lang: str, bits_per_byte: float) -> LanguageLoss:
    """A loss of one pseudo-text of one byte whose bits per byte are ``bits_per_byte``."""
    return LanguageLoss(
        lang,
        torch.tensor([bits_per_byte * math.log(2)], dtype=torch.float64),
        torch.ones(1, dtype=torch.long),
        torch.ones(1, dtype=torch.long),
    )


def saved_matrix(record: dict[str, Any], meta: dict[str, Any]) -> AblationMatrix:
    """The matrix of ``ablation.json`` at the level of bits per byte (the random controls as
    their mean over seeds): what the heatmap shows."""
    langs, labels = list(record["langs"]), list(record["rows"])
    cells = dict(zip(labels, record["bits_per_byte"], strict=True))
    controls = (RANDOM_ROW, ACTIVITY_ROW)

    def losses(row: str) -> dict[str, LanguageLoss]:
        values = zip(langs, cells.get(row, []), strict=False)
        return {lang: _loss(lang, value) for lang, value in values if value is not None}

    rows = [row for row in labels if row not in controls]
    return AblationMatrix(
        langs=langs,
        rows=rows,
        mode=record["mode"],
        baseline={lang: _loss(lang, record["baseline_bits_per_byte"][lang]) for lang in langs},
        ablated={row: losses(row) for row in rows if losses(row)},
        random={lang: [loss] for lang, loss in losses(RANDOM_ROW).items()},
        n_neurons=dict(record["n_neurons"]),
        meta=meta,
        random_activity={lang: [loss] for lang, loss in losses(ACTIVITY_ROW).items()},
        positions=record.get("positions", "all"),
    )


def plot_ablation(record: dict[str, Any], meta: dict[str, Any], run_dir: Path) -> Path:
    """Draw the heatmap of ``ablation.json``'s changes in bits per byte into the run folder."""
    return plot_matrices([saved_matrix(record, meta)], run_dir / HEATMAP, ncols=1)
