"""Stage 4: neuron language-selectivity scores, language-neuron selection, per-layer profiles.

Input is ``{lang: ActivationStats}`` from :func:`mlinguality.activations.collect`. Which
activation each score uses:

- ``hook_post`` (``act(gate) * up`` in gated MLPs): mean difference, Cohen's d, the
  activation-probability difference (``prob_diff``, ``hook_post > 0``), AUROC / average precision
  and flatness (per-example means), top-k overlap and rank correlation (token-level means);
- the gate (``hook_pre > 0``, i.e. ``act(gate) > 0`` for GELU/SiLU gates): LAPE, as Tang et al.
  (2024) counted it; models without a gate fall back to ``hook_post > 0``.

Scores are per neuron (``[layer, d_mlp]``) for a pair of languages or one language against the
rest, or per layer (``[layer]``) for the overlap-style metrics. :func:`selectivity_profile` turns
them into the per-layer table with permutation p-values, bootstrap intervals and the U-shape
statistic (:mod:`mlinguality.significance`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import einops
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.significance import (
    PAIR_METRICS,
    PairTensors,
    ScoreDraws,
    _tie_groups,
    bootstrap_counts,
    chance_iou,
    default_k,
    midranks,
    pair_score_draws,
    topk_iou,
    u_shape_statistic,
    u_shape_test,
)
from mlinguality.stats import ActivationStats

logger = logging.getLogger(__name__)

__all__ = [
    "PROFILE_METRICS",
    "SELECTION_METRICS",
    "SelectivityProfile",
    "activation_flatness",
    "aligned_pair",
    "auroc",
    "average_precision",
    "cohens_d",
    "default_pairs",
    "example_flatness",
    "lape",
    "layer_profile",
    "mean_diff",
    "one_vs_rest_scores",
    "prob_diff",
    "rank_correlation",
    "select_language_neurons",
    "select_lape",
    "selectivity_profile",
    "topk_overlap",
    "u_shape_statistic",
]
# _tie_groups is private to significance but shared here so both rank the same way.

SelectionMetric = Literal["lape", "cohens_d", "prob_diff", "mean_diff", "auroc"]
SELECTION_METRICS: tuple[SelectionMetric, ...] = (
    "lape",
    "cohens_d",
    "prob_diff",
    "mean_diff",
    "auroc",
)
# Per-layer profile metrics: the pairwise ones of mlinguality.significance, plus the share of a
# layer's neurons that LAPE selects (all languages at once) and per-language flatness.
PROFILE_METRICS = (*PAIR_METRICS, "lape", "flatness")


# --- input checks ------------------------------------------------------------------------------


def _check_shapes(stats: dict[str, ActivationStats]) -> tuple[int, int]:
    if len(stats) < 2:
        raise MlingualityError(f"selectivity needs at least 2 languages, got {sorted(stats)}")
    shapes = {lang: tuple(s.sum.shape) for lang, s in stats.items()}
    first = next(iter(shapes.values()))
    for lang, shape in shapes.items():
        if shape != first:
            raise MlingualityError(
                f"stats for {lang} have shape {shape}, others {first} (different models?)"
            )
        if stats[lang].n_tokens < 1:
            raise MlingualityError(f"stats for {lang} count no tokens")
    return first


def _per_example(stats: ActivationStats, what: str) -> None:
    missing = [
        name
        for name in ("example_mean", "example_frac_positive", "example_n_tokens")
        if getattr(stats, name) is None
    ]
    if missing or not stats.example_ids:
        raise MlingualityError(
            f"{what} needs per-example statistics; stats for {stats.lang} lack "
            f"{', '.join(missing) or 'example_ids'} (collect with per_example=True)"
        )
    if len(set(stats.example_ids)) != len(stats.example_ids):
        raise MlingualityError(f"stats for {stats.lang}: duplicate example ids")


def aligned_pair(a: ActivationStats, b: ActivationStats) -> PairTensors:
    """The per-example tensors of ``a`` and ``b`` with ``b`` reordered to ``a``'s example ids.

    Raises:
        MlingualityError: if either lacks per-example statistics or their example ids differ.
    """
    what = f"the pair {a.lang}-{b.lang}"
    _per_example(a, what)
    _per_example(b, what)
    if set(a.example_ids) != set(b.example_ids):
        only_a = sorted(set(a.example_ids) - set(b.example_ids))
        only_b = sorted(set(b.example_ids) - set(a.example_ids))
        example = f"{only_a[0]!r} only in {a.lang}" if only_a else f"{only_b[0]!r} only in {b.lang}"
        raise MlingualityError(
            f"{what}: example ids differ ({len(only_a)} only in {a.lang}, {len(only_b)} only in "
            f"{b.lang}, e.g. {example}); selectivity needs the same parallel examples"
        )
    where = {eid: i for i, eid in enumerate(b.example_ids)}
    order = torch.tensor([where[eid] for eid in a.example_ids], dtype=torch.long)
    return PairTensors(
        lang_a=a.lang,
        lang_b=b.lang,
        mean_a=a.example_mean.float(),
        mean_b=b.example_mean[order].float(),
        frac_a=a.example_frac_positive.float(),
        frac_b=b.example_frac_positive[order].float(),
        n_tokens_a=a.example_n_tokens.float(),
        n_tokens_b=b.example_n_tokens[order].float(),
    )


# --- per-neuron scores -------------------------------------------------------------------------


def mean_diff(a: ActivationStats, b: ActivationStats) -> Float[Tensor, "layer d_mlp"]:
    """``mean_A - mean_B`` of token-level activations."""
    return a.mean - b.mean


def cohens_d(a: ActivationStats, b: ActivationStats) -> Float[Tensor, "layer d_mlp"]:
    """Token-level standardised difference ``(mean_A - mean_B) / pooled sd`` (0 where sd is 0).

    The pooled variance weights each language's unbiased variance by its degrees of freedom.
    """
    return _cohens_d(a.mean, a.var, a.n_tokens, b.mean, b.var, b.n_tokens)


def _cohens_d(
    mean_a: Float[Tensor, "layer d_mlp"],
    var_a: Float[Tensor, "layer d_mlp"],
    n_a: int,
    mean_b: Float[Tensor, "layer d_mlp"],
    var_b: Float[Tensor, "layer d_mlp"],
    n_b: int,
) -> Float[Tensor, "layer d_mlp"]:
    dof = max(n_a + n_b - 2, 1)
    pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / dof
    sd = pooled.sqrt()
    return torch.where(sd > 0, (mean_a - mean_b) / sd.clamp_min(1e-300), 0.0)


def prob_diff(
    a: ActivationStats, b: ActivationStats, gate: bool = False
) -> Float[Tensor, "layer d_mlp"]:
    """``P_A(act > 0) - P_B(act > 0)``; ``gate=True`` counts the gate pre-activation instead."""
    if gate:
        return a.p_gate_positive - b.p_gate_positive
    return a.p_positive - b.p_positive


def lape(
    stats: dict[str, ActivationStats],
) -> tuple[Float[Tensor, "layer d_mlp"], Float[Tensor, "lang layer d_mlp"]]:
    """Language activation probability entropy (Tang et al. 2024) and the probabilities it uses.

    ``p_l`` is the share of language ``l``'s positions where the gate fires (``act(gate) > 0``);
    ``LAPE = -sum_l q_l log q_l`` with ``q_l = p_l / sum_l' p_l'`` (``0 log 0 = 0``, and a neuron
    that never fires gets 0). Low LAPE = specific to few languages.

    Returns:
        ``(entropy, probs)`` with ``probs`` stacked in the order of ``stats``.
    """
    _check_shapes(stats)
    probs = torch.stack([s.p_gate_positive for s in stats.values()])
    total = einops.reduce(probs, "lang layer d_mlp -> layer d_mlp", "sum")
    normed = torch.where(total > 0, probs / total.clamp_min(1e-300), 0.0)
    plogp = torch.where(normed > 0, normed * normed.clamp_min(1e-300).log(), 0.0)
    entropy = -einops.reduce(plogp, "lang layer d_mlp -> layer d_mlp", "sum")
    return entropy, probs


def _example_means(group: Sequence[ActivationStats]) -> Float[Tensor, "example layer d_mlp"]:
    for s in group:
        if s.example_mean is None:
            raise MlingualityError(
                f"AUROC/AP need per-example means; stats for {s.lang} have none "
                "(collect with per_example=True)"
            )
    return torch.cat([s.example_mean.double() for s in group])


def _as_group(x: ActivationStats | Sequence[ActivationStats]) -> list[ActivationStats]:
    return [x] if isinstance(x, ActivationStats) else list(x)


def auroc(
    positive: ActivationStats | Sequence[ActivationStats],
    negative: ActivationStats | Sequence[ActivationStats],
) -> Float[Tensor, "layer d_mlp"]:
    """AUROC of per-example mean activation separating ``positive`` from ``negative`` examples.

    ``P(score_pos > score_neg) + P(tie) / 2`` (Mann-Whitney); 0.5 = no separation.
    """
    pos = _example_means(_as_group(positive))
    neg = _example_means(_as_group(negative))
    ranks = midranks(torch.cat([pos, neg]))
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    rank_sum = einops.reduce(ranks[:n_pos], "example layer d_mlp -> layer d_mlp", "sum")
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(
    positive: ActivationStats | Sequence[ActivationStats],
    negative: ActivationStats | Sequence[ActivationStats],
) -> Float[Tensor, "layer d_mlp"]:
    """Average precision of per-example mean activation retrieving ``positive`` examples.

    Examples ranked by decreasing score; AP = sum over score thresholds of (recall gain) x
    (precision), the definition of scikit-learn's ``average_precision_score`` (Kojima et al.
    2024 used AP): tied scores form one threshold, so a constant neuron scores the prevalence.
    """
    pos = _example_means(_as_group(positive))
    neg = _example_means(_as_group(negative))
    to_last = "example layer d_mlp -> layer d_mlp example"
    scores = einops.rearrange(torch.cat([pos, neg]), to_last).contiguous()
    labels = torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.shape[0])]).double()
    ordered, order = (-scores).sort(dim=-1)
    ranked_labels = labels[order]
    hits = ranked_labels.cumsum(-1)
    _, after = _tie_groups(ordered)  # one past the end of each example's tie group
    precision = hits.gather(-1, after - 1) / after
    ap = einops.reduce(ranked_labels * precision, "layer d_mlp example -> layer d_mlp", "sum")
    return ap / pos.shape[0]


# --- per-layer scores --------------------------------------------------------------------------


def topk_overlap(
    a: ActivationStats, b: ActivationStats, k: int | None = None
) -> Float[Tensor, " layer"]:
    """IoU of the top-k neurons by mean activation of A and of B, per layer.

    Chance level for random k-subsets: :func:`mlinguality.significance.chance_iou`.
    """
    k = default_k(a.d_mlp) if k is None else k
    return topk_iou(a.mean, b.mean, k)


def rank_correlation(a: ActivationStats, b: ActivationStats) -> Float[Tensor, " layer"]:
    """Spearman rho per layer between the neuron rankings by summed activation in A and in B."""
    rows = []
    for layer in range(a.n_layers):
        ranks = midranks(torch.stack([a.sum[layer], b.sum[layer]], dim=1))
        centred = ranks - ranks.mean(0)
        cov = (centred[:, 0] * centred[:, 1]).sum()
        rows.append(cov / (centred.square().sum(0).prod().sqrt()).clamp_min(1e-300))
    return torch.stack(rows)


def example_flatness(stats: ActivationStats) -> Float[Tensor, "example layer"]:
    """Normalised entropy of each example's activation vector per layer, in [0, 1].

    The per-example mean activations of a layer are shifted to a minimum of 0 and scaled to sum 1;
    the entropy is divided by ``log(d_mlp)`` (1 = perfectly flat, 0 = one neuron carries all).
    """
    _per_example(stats, "flatness")
    x = stats.example_mean.double()
    shifted = x - x.min(dim=-1, keepdim=True).values
    total = shifted.sum(-1, keepdim=True)
    p = torch.where(total > 0, shifted / total.clamp_min(1e-300), 1.0 / x.shape[-1])
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), 0.0)
    entropy = -einops.reduce(plogp, "example layer d_mlp -> example layer", "sum")
    return entropy / math.log(x.shape[-1])


def activation_flatness(stats: ActivationStats) -> Float[Tensor, " layer"]:
    """Mean over examples of :func:`example_flatness` (not the sum, so it does not grow with N)."""
    return einops.reduce(example_flatness(stats), "example layer -> layer", "mean")


# --- selection ---------------------------------------------------------------------------------


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
    _check_shapes(stats)
    out = {}
    for lang, own in stats.items():
        rest = _rest(stats, lang)
        if metric == "auroc":
            out[lang] = auroc(own, rest)
            continue
        if metric == "prob_diff":
            out[lang] = own.p_positive - torch.stack([s.p_positive for s in rest]).mean(0)
            continue
        means = torch.stack([s.mean for s in rest])
        rest_mean = means.mean(0)
        if metric == "mean_diff":
            out[lang] = own.mean - rest_mean
            continue
        second = torch.stack([s.var + s.mean**2 for s in rest]).mean(0)
        rest_var = (second - rest_mean**2).clamp_min(0)
        n_rest = sum(s.n_tokens for s in rest)
        out[lang] = _cohens_d(own.mean, own.var, own.n_tokens, rest_mean, rest_var, n_rest)
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
    entropy, probs = lape(stats)
    filter_bar = _kth_smallest(probs, filter_quantile)
    eligible = (probs > filter_bar).any(0)
    if threshold is not None:
        chosen = eligible & (entropy <= threshold)
    else:
        count = k if k is not None else round(top_rate * entropy.numel())
        chosen = _lowest(entropy, eligible, count)
    activation_bar = _kth_smallest(probs, activation_bar_quantile)
    return {lang: chosen & (probs[i] > activation_bar) for i, lang in enumerate(stats)}


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
    _check_shapes(stats)
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


# --- per-layer profile -------------------------------------------------------------------------


@dataclass
class SelectivityProfile:
    """Per-layer profile and U-shape statistics.

    Attributes:
        layers: Tidy rows ``layer, metric, pair, value, ci_low, ci_high, p_value, null_mean,
            chance`` (NaN where not computed). ``pair`` is ``"A-B"`` for pairwise metrics, the
            language for ``flatness`` and ``"all"`` for ``lape`` (share of the layer selected).
        u_shape: Rows ``metric, pair, u, p_value, ci_low, ci_high, null_u_mean, n_permutations,
            n_bootstrap``.
    """

    layers: pd.DataFrame
    u_shape: pd.DataFrame


def default_pairs(langs: Sequence[str]) -> list[tuple[str, str]]:
    """English against each other language when English is there, else the first against each."""
    anchor = "en" if "en" in langs else langs[0]
    return [(anchor, lang) for lang in langs if lang != anchor]


def _rows(metric: str, pair: str, draws: ScoreDraws, level: float, chance: float) -> list[dict]:
    ci = draws.ci(level)
    p = draws.p_values()
    null = draws.null_mean()
    nan = math.nan
    return [
        {
            "layer": layer,
            "metric": metric,
            "pair": pair,
            "value": float(draws.observed[layer]),
            "ci_low": float(ci[0][layer]) if ci else nan,
            "ci_high": float(ci[1][layer]) if ci else nan,
            "p_value": float(p[layer]) if p is not None else nan,
            "null_mean": float(null[layer]) if null is not None else nan,
            "chance": chance,
        }
        for layer in range(draws.observed.shape[0])
    ]


def _u_row(metric: str, pair: str, draws: ScoreDraws, level: float) -> dict:
    result = u_shape_test(draws, level)
    return {"metric": metric, "pair": pair, **vars(result)}


def selectivity_profile(
    stats: dict[str, ActivationStats],
    pairs: list[tuple[str, str]] | None = None,
    metrics: Sequence[str] = PROFILE_METRICS,
    k: int | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> SelectivityProfile:
    """Layer x metric x pair table with permutation p-values, bootstrap CIs and U statistics.

    Args:
        stats: ``{lang: ActivationStats}`` with per-example statistics over the same examples.
        pairs: Language pairs (default: :func:`default_pairs`).
        metrics: Any of :data:`PROFILE_METRICS`.
        k: Top-k size for ``topk`` (default 5% of d_mlp).
        n_permutations: Within-pair relabellings per pair (same draws for every metric).
        n_bootstrap: Resamples of examples.
        level: Confidence level of the intervals.
        seed: Seeds every draw.
    """
    _, d_mlp = _check_shapes(stats)
    unknown = sorted(set(metrics) - set(PROFILE_METRICS))
    if unknown:
        raise MlingualityError(
            f"unknown profile metric {unknown[0]!r}; choose from {', '.join(PROFILE_METRICS)}"
        )
    pairs = default_pairs(list(stats)) if pairs is None else pairs
    for a, b in pairs:
        for lang in (a, b):
            if lang not in stats:
                raise MlingualityError(
                    f"pair {a}-{b}: no stats for {lang!r} (have {sorted(stats)})"
                )
    k = default_k(d_mlp) if k is None else k
    rows: list[dict] = []
    u_rows: list[dict] = []
    pair_metrics = [m for m in metrics if m in PAIR_METRICS]
    for a, b in pairs if pair_metrics else []:
        name = f"{a}-{b}"
        logger.info("selectivity profile: %s (%d permutations)", name, n_permutations)
        draws = pair_score_draws(
            aligned_pair(stats[a], stats[b]), pair_metrics, n_permutations, n_bootstrap, k, seed
        )
        for metric, metric_draws in draws.items():
            chance = 1 - chance_iou(k, d_mlp) if metric == "topk" else math.nan
            rows += _rows(metric, name, metric_draws, level, chance)
            u_rows.append(_u_row(metric, name, metric_draws, level))
    if "lape" in metrics:
        masks = select_lape(stats)
        owned = torch.stack(list(masks.values())).any(0).double()
        share = einops.reduce(owned, "layer d_mlp -> layer", "mean")
        rows += _rows("lape", "all", ScoreDraws(observed=share), level, math.nan)
        u_rows.append(_u_row("lape", "all", ScoreDraws(observed=share), level))
    if "flatness" in metrics:
        generator = torch.Generator().manual_seed(seed)
        for lang, s in stats.items():
            per_example = example_flatness(s)
            counts = bootstrap_counts(n_bootstrap, per_example.shape[0], generator).double()
            boot = (counts @ per_example) / counts.sum(1, keepdim=True)
            draws = ScoreDraws(
                observed=per_example.mean(0), bootstrap=boot if n_bootstrap else None
            )
            rows += _rows("flatness", lang, draws, level, math.nan)
            u_rows.append(_u_row("flatness", lang, draws, level))
    return SelectivityProfile(pd.DataFrame(rows), pd.DataFrame(u_rows))


def layer_profile(
    stats: dict[str, ActivationStats],
    pairs: list[tuple[str, str]] | None = None,
    metrics: Sequence[str] = PROFILE_METRICS,
    k: int | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The ``layers`` table of :func:`selectivity_profile` (tidy rows, one per layer/metric/pair)."""
    return selectivity_profile(
        stats, pairs, metrics, k, n_permutations, n_bootstrap, level, seed
    ).layers
