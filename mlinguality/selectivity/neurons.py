"""Selected neurons as a tidy table: one row per (language, layer, neuron) with its score.

Masks (``{lang: Bool[layer, d_mlp]}``, what :func:`~mlinguality.selectivity.selection.select_language_neurons`
returns) are what the ablation hooks take; this table is what you sort, filter, join and plot.

>>> import torch
>>> masks = {"en": torch.tensor([[True, False], [False, True]]), "fr": torch.zeros(2, 2, dtype=torch.bool)}
>>> neuron_table(masks).values.tolist()
[['en', 0, 0, nan], ['en', 1, 1, nan]]
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.selectivity.scores import lape
from mlinguality.selectivity.selection import one_vs_rest_scores

COLUMNS = ["lang", "layer", "neuron", "score"]
SCORE_MEANING = {
    "lape": "LAPE entropy over languages (lower = more language-specific)",
    "cohens_d": "Cohen's d of the language against the rest (higher = more specific)",
    "prob_diff": "P(act > 0) in the language minus the rest (higher = more specific)",
    "mean_diff": "mean activation in the language minus the rest (higher = more specific)",
    "auroc": "AUROC of the language against the rest (higher = more specific)",
}

LOWER_IS_MORE_SPECIFIC = frozenset({"lape"})  # an entropy: low = concentrated on few languages


def specificity_key(metric: str, score: float | None) -> float:
    """A sort key that puts the most language-specific neuron first for ``metric``.

    >>> sorted([0.2, 1.3, 0.7], key=lambda s: specificity_key("lape", s))
    [0.2, 0.7, 1.3]
    >>> sorted([0.2, 1.3, 0.7], key=lambda s: specificity_key("cohens_d", s))
    [1.3, 0.7, 0.2]
    """
    if score is None or score != score:
        return float("inf")
    return score if metric in LOWER_IS_MORE_SPECIFIC else -score


def neuron_scores(stats: dict[str, ActivationStats], metric: str) -> dict[str, Tensor]:
    """Per-language ``[layer, d_mlp]`` scores the selection ranks by (LAPE: one shared entropy)."""
    if metric == "lape":
        entropy, _ = lape(stats)
        return dict.fromkeys(stats, entropy)
    return one_vs_rest_scores(stats, metric)  # type: ignore[arg-type]


def neuron_table(
    masks: dict[str, Bool[Tensor, "layer d_mlp"]],
    stats: dict[str, ActivationStats] | None = None,
    metric: str = "lape",
) -> pd.DataFrame:
    """Rows ``(lang, layer, neuron, score)`` for every selected neuron, by language then position.

    Args:
        masks: ``{lang: mask}``, True at the selected neurons.
        stats: The statistics the masks were selected from; with them, ``score`` holds the
            ``metric`` score (see :data:`SCORE_MEANING`), without them NaN.
        metric: The selection metric (``lape``, ``cohens_d``, ``prob_diff``, ``mean_diff``,
            ``auroc``).
    """
    scores = neuron_scores(stats, metric) if stats is not None else {}
    frames = []
    for lang, mask in masks.items():
        layer, neuron = mask.nonzero(as_tuple=True)
        values = (
            scores[lang][layer, neuron].double()
            if lang in scores
            else torch.full((len(layer),), float("nan"), dtype=torch.float64)
        )
        frames.append(
            pd.DataFrame(
                {
                    "lang": lang,
                    "layer": layer.numpy(),
                    "neuron": neuron.numpy(),
                    "score": values.numpy(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def masks_from_table(
    table: pd.DataFrame, n_layers: int, d_mlp: int
) -> dict[str, Bool[Tensor, "layer d_mlp"]]:
    """The inverse of :func:`neuron_table`: ``{lang: mask}`` (languages in table order)."""
    masks = {}
    for lang, rows in table.groupby("lang", sort=False):
        mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
        mask[torch.as_tensor(rows["layer"].values), torch.as_tensor(rows["neuron"].values)] = True
        masks[str(lang)] = mask
    return masks
