"""Stage 4a: neuron language-selectivity scores, per neuron and per layer.

Input is ``{lang: ActivationStats}`` from :func:`mlinguality.activations.collect.collect`. Which
activation each score uses:

- ``hook_post`` (``act(gate) * up`` in gated MLPs): mean difference, Cohen's d, AUROC / average
  precision and flatness (per-example means), top-k overlap and rank correlation (token-level
  means);
- firing, the gate (``hook_pre > 0``, i.e. ``act(gate) > 0`` for GELU/SiLU gates): LAPE, as Tang
  et al. (2024) counted it, and the firing-rate difference ``prob_diff``; models without a gate
  fall back to ``hook_post > 0``.

Scores are per neuron (``[layer, d_mlp]``) for a pair of languages, or per layer (``[layer]``)
for the overlap-style metrics. :mod:`mlinguality.selectivity.selection` picks language neurons
from them; :mod:`mlinguality.selectivity.profile` turns them into the per-layer table with
permutation p-values, bootstrap intervals and the U-shape statistic (draws from
:mod:`mlinguality.selectivity.resampling`). The aligned pair tensors and the top-k overlap come
from the base :mod:`mlinguality.selectivity.pairs`; nothing here imports the resampling module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import PairTensors, default_k, topk_iou
from mlinguality.selectivity.ranks import midranks, tie_groups

logger = logging.getLogger(__name__)

__all__ = [
    "activation_flatness",
    "example_firing",
    "aligned_pair",
    "auroc",
    "average_precision",
    "check_stats",
    "cohens_d",
    "cohens_d_from_moments",
    "example_flatness",
    "lape",
    "mean_diff",
    "prob_diff",
    "rank_correlation",
    "topk_overlap",
]


# --- input checks ------------------------------------------------------------------------------


def check_stats(stats: dict[str, ActivationStats]) -> tuple[int, int]:
    """Check that ``stats`` holds >= 2 languages of one model, each with counted tokens.

    Returns ``(n_layers, d_mlp)``; raises MlingualityError naming the offending language.
    """
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
        frac_a=example_firing(a).float(),
        frac_b=example_firing(b)[order].float(),
        n_tokens_a=a.example_n_tokens.float(),
        n_tokens_b=b.example_n_tokens[order].float(),
    )


def example_firing(stats: ActivationStats) -> Float[Tensor, "example layer d_mlp"]:
    """Per-example firing share: of the gate (``hook_pre > 0``) on gated MLPs when collected
    (``example_frac_gate_positive``), else of ``hook_post > 0`` (plain MLPs)."""
    gate = getattr(stats, "example_frac_gate_positive", None)
    if gate is not None:
        return gate
    if stats.n_gate_positive is not None:
        logger.warning(
            "stats for %s: a gated MLP without per-example gate shares; per-example firing "
            "falls back to hook_post > 0 (recollect for the gate)",
            stats.lang,
        )
    return stats.example_frac_positive


# --- per-neuron scores -------------------------------------------------------------------------


def mean_diff(a: ActivationStats, b: ActivationStats) -> Float[Tensor, "layer d_mlp"]:
    """``mean_A - mean_B`` of token-level activations."""
    return a.mean - b.mean


def cohens_d(a: ActivationStats, b: ActivationStats) -> Float[Tensor, "layer d_mlp"]:
    """Token-level standardised difference ``(mean_A - mean_B) / pooled sd`` (0 where sd is 0).

    The pooled variance weights each language's unbiased variance by its degrees of freedom.
    """
    return cohens_d_from_moments(a.mean, a.var, a.n_tokens, b.mean, b.var, b.n_tokens)


def cohens_d_from_moments(
    mean_a: Float[Tensor, "layer d_mlp"],
    var_a: Float[Tensor, "layer d_mlp"],
    n_a: int,
    mean_b: Float[Tensor, "layer d_mlp"],
    var_b: Float[Tensor, "layer d_mlp"],
    n_b: int,
) -> Float[Tensor, "layer d_mlp"]:
    """Cohen's d from two groups' means, unbiased variances and counts (pooled sd; 0 where sd = 0)."""
    dof = max(n_a + n_b - 2, 1)
    pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / dof
    sd = pooled.sqrt()
    return torch.where(sd > 0, (mean_a - mean_b) / sd.clamp_min(1e-300), 0.0)


def prob_diff(
    a: ActivationStats, b: ActivationStats, gate: bool = True
) -> Float[Tensor, "layer d_mlp"]:
    """Difference of firing rates, ``P_A(fires) - P_B(fires)``.

    Firing is the gate (``hook_pre > 0``) on gated MLPs: with the gate off, ``act(gate)`` is
    slightly negative and the sign of ``hook_post = act(gate) * up`` just follows ``up``. Plain
    MLPs (and ``gate=False``) count ``hook_post > 0``.
    """
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
    check_stats(stats)
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
    _, after = tie_groups(ordered)  # one past the end of each example's tie group
    precision = hits.gather(-1, after - 1) / after
    ap = einops.reduce(ranked_labels * precision, "layer d_mlp example -> layer d_mlp", "sum")
    return ap / pos.shape[0]


# --- per-layer scores --------------------------------------------------------------------------


def topk_overlap(
    a: ActivationStats, b: ActivationStats, k: int | None = None
) -> Float[Tensor, " layer"]:
    """IoU of the top-k neurons by mean activation of A and of B, per layer.

    Chance level for random k-subsets: :func:`mlinguality.selectivity.pairs.chance_iou`.
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
