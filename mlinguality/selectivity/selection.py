"""Stage 4b: language-neuron selection from the scores of :mod:`mlinguality.selectivity.scores`.

LAPE (Tang et al. 2024) picks low-entropy neurons across all languages at once; the other
metrics score each language against the rest (:func:`one_vs_rest_scores`) and keep the best.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.selectivity.scores import auroc, check_stats, cohens_d_from_moments, lape

__all__ = [
    "SELECTION_METRICS",
    "lape_select_probs",
    "one_vs_rest_scores",
    "select_language_neurons",
    "select_lape",
]

SelectionMetric = Literal["lape", "cohens_d", "prob_diff", "mean_diff", "auroc"]
SELECTION_METRICS: tuple[SelectionMetric, ...] = (
    "lape",
    "cohens_d",
    "prob_diff",
    "mean_diff",
    "auroc",
)


def _rest(stats: dict[str, ActivationStats], lang: str) -> list[ActivationStats]:
    return [s for other, s in stats.items() if other != lang]


def one_vs_rest_scores(
    stats: dict[str, ActivationStats],
    metric: Literal["cohens_d", "prob_diff", "mean_diff", "auroc"],
) -> dict[str, Float[Tensor, "layer d_mlp"]]:
    """Per-neuron score of each language against the others (higher = more active in it).

    The rest is the equal-weight mixture of the other languages (mean of their means and
    probabilities; mixture variance for Cohen's d), so a language with longer tokenisations
    does not dominate it. AUROC pools every other language's examples as negatives.
    """
    check_stats(stats)
    out = {}
    for lang, own in stats.items():
        rest = _rest(stats, lang)
        if metric == "auroc":
            out[lang] = auroc(own, rest)
            continue
        if metric == "prob_diff":  # firing: the gate on gated MLPs (hook_post > 0 on plain ones)
            rest_rate = torch.stack([s.p_gate_positive for s in rest]).mean(0)
            out[lang] = own.p_gate_positive - rest_rate
            continue
        means = torch.stack([s.mean for s in rest])
        rest_mean = means.mean(0)
        if metric == "mean_diff":
            out[lang] = own.mean - rest_mean
            continue
        second = torch.stack([s.var + s.mean**2 for s in rest]).mean(0)
        rest_var = (second - rest_mean**2).clamp_min(0)
        n_rest = sum(s.n_tokens for s in rest)
        out[lang] = cohens_d_from_moments(
            own.mean, own.var, own.n_tokens, rest_mean, rest_var, n_rest
        )
    return out


def _kth_smallest(values: Tensor, fraction: float) -> float:
    """Tang et al.'s bar: ``values.flatten().kthvalue(round(n * fraction))`` (1-based k)."""
    flat = values.flatten()
    k = min(max(round(flat.numel() * fraction), 1), flat.numel())
    return float(flat.kthvalue(k).values)


def _lowest(values: Tensor, eligible: Tensor, count: int) -> Tensor:
    """Mask of the ``count`` lowest eligible values (fewer if fewer are eligible)."""
    masked = torch.where(eligible, values, math.inf).flatten()
    count = min(count, int(eligible.sum()))
    mask = torch.zeros_like(masked, dtype=torch.bool)
    if count > 0:
        mask[masked.topk(count, largest=False).indices] = True
    return mask.view_as(values)  # [layer, d_mlp], the shape of values


def select_lape(
    stats: dict[str, ActivationStats],
    top_rate: float = 0.01,
    k: int | None = None,
    threshold: float | None = None,
    activation_bar_quantile: float = 0.95,
    filter_quantile: float = 0.95,
) -> dict[str, Bool[Tensor, "layer d_mlp"]]:
    """Tang et al.'s LAPE selection (their ``identify.py``), with every knob exposed.

    1. ``filter_bar`` = the ``filter_quantile`` order statistic of all activation probabilities
       (every layer, neuron and language); neurons where no language exceeds it are dropped.
    2. Of the rest, keep the ``round(top_rate * layer * d_mlp)`` lowest-LAPE neurons (or the
       ``k`` lowest, or those with LAPE ``<= threshold``).
    3. ``activation_bar`` = the ``activation_bar_quantile`` order statistic of the same
       probabilities; a kept neuron belongs to every language whose probability exceeds it.

    Unlike their code, a dropped neuron is never kept to fill the quota; the two agree whenever
    enough neurons pass the filter or the two bars are equal (the default).
    """
    _, probs = lape(stats)
    chosen, owned = lape_select_probs(
        probs, top_rate, k, threshold, activation_bar_quantile, filter_quantile
    )
    return {lang: owned[i] for i, lang in enumerate(stats)}


def lape_select_probs(
    probs: Float[Tensor, "lang layer d_mlp"],
    top_rate: float = 0.01,
    k: int | None = None,
    threshold: float | None = None,
    activation_bar_quantile: float = 0.95,
    filter_quantile: float = 0.95,
) -> tuple[Bool[Tensor, "layer d_mlp"], Bool[Tensor, "lang layer d_mlp"]]:
    """:func:`select_lape` on firing probabilities: ``(chosen, owned)``, the kept neurons and,
    per language, those it owns (what a permutation null recomputes on relabelled data)."""
    total = probs.sum(0)
    normed = torch.where(total > 0, probs / total.clamp_min(1e-300), 0.0)
    entropy = -torch.where(normed > 0, normed * normed.clamp_min(1e-300).log(), 0.0).sum(0)
    filter_bar = _kth_smallest(probs, filter_quantile)
    eligible = (probs > filter_bar).any(0)
    if threshold is not None:
        chosen = eligible & (entropy <= threshold)
    else:
        count = k if k is not None else round(top_rate * entropy.numel())
        chosen = _lowest(entropy, eligible, count)
    activation_bar = _kth_smallest(probs, activation_bar_quantile)
    return chosen, chosen & (probs > activation_bar)


def select_language_neurons(
    stats: dict[str, ActivationStats],
    metric: SelectionMetric = "lape",
    top_rate: float = 0.01,
    k: int | None = None,
    threshold: float | None = None,
    activation_bar_quantile: float = 0.95,
    filter_quantile: float = 0.95,
) -> dict[str, Bool[Tensor, "layer d_mlp"]]:
    """For each language, the mask of the (layer, neuron) pairs it owns.

    ``lape``: :func:`select_lape` (a neuron can belong to several languages). Other metrics score
    each language against the rest (:func:`one_vs_rest_scores`; higher = more active in that
    language) and keep, over all layers together, the neurons with score ``>= threshold``, else
    the ``k`` best, else the best ``round(top_rate * layer * d_mlp)``.

    Args:
        stats: ``{lang: ActivationStats}``, at least two languages.
        metric: Which score.
        top_rate: Share of all neurons to keep per language (LAPE: in total).
        k: Number to keep instead of ``top_rate``.
        threshold: Score bar instead of a count (LAPE: maximum entropy).
        activation_bar_quantile: LAPE only: the quantile a language's probability must exceed.
        filter_quantile: LAPE only: the quantile some language's probability must exceed.
    """
    check_stats(stats)
    if not 0 <= top_rate <= 1:
        raise MlingualityError(f"top_rate must be in [0, 1], got {top_rate}")
    if k is not None and k < 0:
        raise MlingualityError(f"k must be >= 0, got {k}")
    for name, q in (
        ("activation_bar_quantile", activation_bar_quantile),
        ("filter_quantile", filter_quantile),
    ):
        if not 0 <= q <= 1:
            raise MlingualityError(f"{name} must be in [0, 1], got {q}")
    if metric == "lape":
        return select_lape(stats, top_rate, k, threshold, activation_bar_quantile, filter_quantile)
    if metric not in SELECTION_METRICS:
        raise MlingualityError(
            f"unknown selection metric {metric!r}; choose from {', '.join(SELECTION_METRICS)}"
        )
    masks = {}
    for lang, score in one_vs_rest_scores(stats, metric).items():
        if threshold is not None:
            masks[lang] = score >= threshold
            continue
        count = k if k is not None else round(top_rate * score.numel())
        masks[lang] = _lowest(-score, torch.ones_like(score, dtype=torch.bool), count)
    return masks
