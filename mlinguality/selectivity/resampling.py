"""Resampling of per-layer selectivity: permutation and bootstrap draws, multiple comparisons.

Everything here works on the aligned per-example tensors of one language pair
(:class:`~mlinguality.selectivity.pairs.PairTensors`, built from two
:class:`~mlinguality.activations.stats.ActivationStats` by
:func:`mlinguality.selectivity.scores.aligned_pair`). A *draw* re-weights the examples:

- a **permutation** swaps the two languages within a random subset of aligned pairs (verse ``e``
  in language A counts as B and vice versa). Under the null hypothesis that the two languages'
  activations are exchangeable pair by pair, every such relabelling is equally likely;
- a **bootstrap** resamples whole pairs with replacement (multinomial counts per example).

Each layer score is a function of label-wise sums over examples, and a label-wise sum under a
draw is one matrix product ``[draw, example] @ [example, layer*d_mlp]``, so a thousand draws of
an 18 x 2048 model cost a handful of matrix products (``benchmarks/bench_significance.py``).

Layer scores (:data:`PAIR_METRICS`; larger = more language-specific, one value per layer):

- ``mean_diff``: mean over neurons of ``|mean_A - mean_B|`` of per-example mean activations;
- ``cohens_d``: mean over neurons of ``|d|``, with ``d`` the standardised difference of
  per-example means (pooled within-language sd over examples);
- ``prob_diff``: mean over neurons of ``|p_A - p_B|``, ``p`` the token-weighted firing share
  (the gate ``hook_pre > 0`` on gated MLPs, ``hook_post > 0`` on plain ones: ``frac_*``);
- ``auroc``: mean over neurons of ``|2 AUROC - 1|``, AUROC of the per-example means of A
  against those of B (ties count one half);
- ``topk``: ``1 - IoU`` of the top-k neurons by token-weighted mean activation;
- ``rank_corr``: ``1 - Spearman rho`` between the neuron rankings by token-weighted mean
  (equivalently by summed activation) of A and of B.

From the draws: one-sided permutation p-values (:func:`permutation_p_value`), bias-shifted
percentile intervals (:func:`shifted_percentile_ci`), and Benjamini-Hochberg q-values of a
family of p-values (:func:`benjamini_hochberg`, per-layer tests over layers and pairs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import PairTensors, default_k, topk_iou
from mlinguality.selectivity.ranks import midranks, spearman_last

__all__ = [
    "PAIR_METRICS",
    "ScoreDraws",
    "benjamini_hochberg",
    "bootstrap_counts",
    "pair_score_draws",
    "percentile_ci",
    "permutation_p_value",
    "permutation_signs",
    "scores_under_draws",
    "shifted_percentile_ci",
]

PairMetric = Literal["mean_diff", "cohens_d", "prob_diff", "auroc", "topk", "rank_corr"]
PAIR_METRICS: tuple[PairMetric, ...] = (
    "mean_diff",
    "cohens_d",
    "prob_diff",
    "auroc",
    "topk",
    "rank_corr",
)

# Draws per matrix product: [128, example] @ [example, 36864] keeps every temporary under
# ~20 MB for Gemma 3 270M (18 x 2048 neurons) while the products stay large enough to be fast.
_CHUNK = 128
# Relative slack when counting permuted scores "at least as extreme": the identity relabelling
# recomputed in another summation order must count as a tie, not as smaller.
_TIE_RTOL = 1e-6


@dataclass
class ScoreDraws:
    """Layer scores of one metric: observed, under permutations, under bootstrap resamples.

    Attributes:
        observed: The score of the data as labelled.
        permuted: One row per permutation (``None`` if none were drawn).
        bootstrap: One row per bootstrap resample (``None`` if none were drawn).
    """

    observed: Float[Tensor, " layer"]
    permuted: Float[Tensor, "perm layer"] | None = None
    bootstrap: Float[Tensor, "boot layer"] | None = None

    def p_values(self) -> Float[Tensor, " layer"] | None:
        """One-sided permutation p-value per layer (``None`` without permutations)."""
        if self.permuted is None:
            return None
        return permutation_p_value(self.observed, self.permuted)

    def null_mean(self) -> Float[Tensor, " layer"] | None:
        """Mean score under the permutation null: the empirical chance level of each layer."""
        return None if self.permuted is None else self.permuted.mean(0)

    def ci(
        self, level: float = 0.95
    ) -> tuple[Float[Tensor, " layer"], Float[Tensor, " layer"]] | None:
        """Bias-shifted percentile bootstrap interval per layer (``None`` without resamples).

        See :func:`shifted_percentile_ci`: resampling with replacement duplicates examples,
        which raises the noise floor of scores such as mean ``|d|``.
        """
        if self.bootstrap is None:
            return None
        return shifted_percentile_ci(self.observed, self.bootstrap, level)


# --- draws, p-values, intervals, q-values ------------------------------------------------------


def permutation_signs(
    n_permutations: int, n_examples: int, generator: torch.Generator
) -> Float[Tensor, "perm example"]:
    """Random ``+1`` (keep) / ``-1`` (swap the two languages) per permutation and example."""
    bits = torch.randint(0, 2, (n_permutations, n_examples), generator=generator)
    return bits.float() * 2 - 1


def bootstrap_counts(
    n_bootstrap: int, n_examples: int, generator: torch.Generator
) -> Float[Tensor, "boot example"]:
    """How many times each example is drawn in each resample (n_examples draws with replacement)."""
    picks = torch.randint(0, n_examples, (n_bootstrap, n_examples), generator=generator)
    counts = torch.zeros(n_bootstrap, n_examples)
    return counts.scatter_add_(1, picks, torch.ones_like(picks, dtype=counts.dtype))


def permutation_p_value(
    observed: Float[Tensor, "*score"],
    null: Float[Tensor, "perm *score"],  # noqa: F821 (a jaxtyping shape, not an expression)
) -> Float[Tensor, "*score"]:
    """``(1 + #{null >= observed}) / (1 + n_perm)``: one-sided, never zero, exact under the null.

    >>> permutation_p_value(torch.tensor([2.0]), torch.tensor([[1.0], [3.0], [2.0]]))
    tensor([0.7500])
    """
    slack = _TIE_RTOL * observed.abs()
    extreme = (null >= observed - slack).sum(0).to(observed.dtype)
    return (1 + extreme) / (1 + null.shape[0])


def percentile_ci(
    draws: Float[Tensor, "boot *score"],  # noqa: F821 (a jaxtyping shape)
    level: float = 0.95,
) -> tuple[Float[Tensor, "*score"], Float[Tensor, "*score"]]:
    """Percentile interval of bootstrap draws (nan-aware)."""
    if not 0 < level < 1:
        raise MlingualityError(f"confidence level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    array = draws.double().numpy()
    low = np.nanquantile(array, tail, axis=0)
    high = np.nanquantile(array, 1 - tail, axis=0)
    return torch.as_tensor(low, dtype=draws.dtype), torch.as_tensor(high, dtype=draws.dtype)


def shifted_percentile_ci(
    observed: Float[Tensor, "*score"],
    draws: Float[Tensor, "boot *score"],  # noqa: F821 (a jaxtyping shape)
    level: float = 0.95,
) -> tuple[Float[Tensor, "*score"], Float[Tensor, "*score"]]:
    """Percentile interval moved by the bootstrap bias ``mean(draws) - observed``.

    Mean-of-absolute-value scores (mean ``|d|``, mean ``|p_A - p_B|``) have a noise floor that
    grows when a resample repeats examples (fewer distinct examples), so plain percentile
    intervals of null layers sit wholly above the observed value. Shifting by the estimated bias
    centres the interval on the observed value and keeps the bootstrap's spread and skew.

    >>> low, high = shifted_percentile_ci(torch.tensor([1.0]), torch.tensor([[2.0], [3.0], [4.0]]), 0.5)
    >>> low.item(), high.item()
    (0.5, 1.5)
    """
    low, high = percentile_ci(draws, level)
    bias = torch.as_tensor(np.nanmean(draws.double().numpy(), axis=0), dtype=draws.dtype) - observed
    return low - bias, high - bias


def benjamini_hochberg(p_values: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Benjamini-Hochberg q-values (false discovery rate) of one family; NaN entries stay NaN
    and do not count towards the family size.

    ``q_(i) = min_{j >= i} p_(j) * m / j`` over the sorted p-values, capped at 1.

    >>> benjamini_hochberg(torch.tensor([0.01, 0.04, 0.03, float("nan")], dtype=torch.float64)).tolist()
    [0.03, 0.04, 0.04, nan]
    """
    p = p_values.double()
    out = torch.full_like(p, float("nan"))
    finite = ~torch.isnan(p)
    m = int(finite.sum())
    if m == 0:
        return out
    values = p[finite]
    order = values.argsort()
    ranked = values[order] * m / torch.arange(1, m + 1, dtype=torch.float64)
    monotone = ranked.flip(0).cummin(0).values.flip(0).clamp_max(1.0)
    q = torch.empty_like(values)
    q[order] = monotone
    out[finite] = q
    return out


# --- layer scores under draws ------------------------------------------------------------------


class _Prepared:
    """Per-pair tensors flattened to ``[example, layer*d_mlp]``, computed once for all draws."""

    def __init__(self, pair: PairTensors, metrics: Sequence[str]) -> None:
        flat = "example layer d_mlp -> example (layer d_mlp)"
        self.pair = pair
        self.n_layers = pair.n_layers
        self.d_mlp = pair.d_mlp
        xa = einops.rearrange(pair.mean_a.float(), flat)
        xb = einops.rearrange(pair.mean_b.float(), flat)
        na = pair.n_tokens_a.float()[:, None]
        nb = pair.n_tokens_b.float()[:, None]
        self.fields: dict[str, tuple[Tensor, Tensor]] = {}
        self._perm_cache: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        if {"mean_diff", "cohens_d"} & set(metrics):
            # Both scores are shift-invariant; centring keeps float32 sums of squares accurate.
            centre = (xa.mean(0) + xb.mean(0)) / 2
            xa_c, xb_c = xa - centre, xb - centre
            self.fields["x"] = (xa_c, xb_c)
            self.fields["x2"] = (xa_c.square(), xb_c.square())
        if "prob_diff" in metrics:
            self.fields["nf"] = (
                na * einops.rearrange(pair.frac_a.float(), flat),
                nb * einops.rearrange(pair.frac_b.float(), flat),
            )
        if {"prob_diff", "topk", "rank_corr"} & set(metrics):
            self.fields["n"] = (na, nb)
        if {"topk", "rank_corr"} & set(metrics):
            self.fields["nx"] = (na * xa, nb * xb)
        if "auroc" in metrics:
            ranks = midranks(torch.cat([xa, xb]))
            n = xa.shape[0]
            self.fields["rank"] = (ranks[:n], ranks[n:])
            self._auroc_sorted = None
            self._pooled = (xa, xb)

    def label_sums(
        self, field: str, weights: Float[Tensor, "draw example"], kind: str
    ) -> tuple[Tensor, Tensor]:
        """Sums over examples of the field for label A and label B under each draw."""
        a, b = self.fields[field]
        if kind == "perm":
            # label A takes source A where the sign is +1, source B where it is -1
            if field not in self._perm_cache:
                self._perm_cache[field] = (a - b, b.sum(0), a.sum(0) + b.sum(0))
            diff, sum_b, total = self._perm_cache[field]
            sum_a = torch.addmm(sum_b, (1 + weights) / 2, diff)
            return sum_a, total - sum_a
        return weights @ a, weights @ b

    def auroc_weighted(
        self, counts: Float[Tensor, "draw example"]
    ) -> Float[Tensor, "draw feature"]:
        """AUROC of A against B with example weights (bootstrap), exact with ties as one half.

        B's values are sorted once per neuron and each A value's place among them found once;
        a draw then only needs the cumulative B weight at those places:
        ``AUROC = sum_i w_i (W_B(< a_i) + W_B(= a_i) / 2) / (sum w)^2``.
        """
        if self._auroc_sorted is None:
            xa, xb = self._pooled
            to_features = "example feature -> feature example"
            a_values = einops.rearrange(xa, to_features).contiguous()
            b_sorted, b_order = einops.rearrange(xb, to_features).contiguous().sort(dim=-1)
            below = torch.searchsorted(b_sorted, a_values, side="left")
            up_to = torch.searchsorted(b_sorted, a_values, side="right")
            self._auroc_sorted = (b_order, below, up_to)
        b_order, below, up_to = self._auroc_sorted
        out = []
        for row in counts:
            cum_b = torch.nn.functional.pad(row[b_order].cumsum(-1), (1, 0))  # [feature, 1+ex]
            placed = (cum_b.gather(-1, below) + cum_b.gather(-1, up_to)) / 2
            out.append((placed @ row) / row.sum() ** 2)
        return torch.stack(out)


def _scores_for_draws(
    prep: _Prepared,
    metrics: Sequence[str],
    weights: Float[Tensor, "draw example"],
    kind: Literal["perm", "boot"],
    k: int,
) -> dict[str, Float[Tensor, "draw layer"]]:
    """Layer scores of every metric for a chunk of draws (see the module docstring)."""
    per_neuron = "draw (layer d_mlp) -> draw layer d_mlp"
    n_examples = weights.sum(1, keepdim=True) if kind == "boot" else None
    if n_examples is None:
        n_examples = torch.full((weights.shape[0], 1), float(prep.pair.n_examples))

    def neurons(flat: Tensor) -> Tensor:
        return einops.rearrange(flat, per_neuron, layer=prep.n_layers)

    def layer_mean(per: Tensor) -> Tensor:
        return einops.reduce(neurons(per), "draw layer d_mlp -> draw layer", "mean")

    out: dict[str, Tensor] = {}
    if {"mean_diff", "cohens_d"} & set(metrics):
        sum_a, sum_b = prep.label_sums("x", weights, kind)
        mean_a, mean_b = sum_a / n_examples, sum_b / n_examples
        if "mean_diff" in metrics:
            out["mean_diff"] = layer_mean((mean_a - mean_b).abs())
        if "cohens_d" in metrics:
            sq_a, sq_b = prep.label_sums("x2", weights, kind)
            within = (sq_a - n_examples * mean_a**2) + (sq_b - n_examples * mean_b**2)
            pooled_var = within.clamp_min(0) / (2 * n_examples - 2)
            sd = pooled_var.sqrt()
            d = torch.where(sd > 1e-12, (mean_a - mean_b) / sd.clamp_min(1e-12), 0.0)
            out["cohens_d"] = layer_mean(d.abs())
    if {"prob_diff", "topk", "rank_corr"} & set(metrics):
        tok_a, tok_b = prep.label_sums("n", weights, kind)
    if "prob_diff" in metrics:
        pos_a, pos_b = prep.label_sums("nf", weights, kind)
        out["prob_diff"] = layer_mean((pos_a / tok_a - pos_b / tok_b).abs())
    if {"topk", "rank_corr"} & set(metrics):
        act_a, act_b = prep.label_sums("nx", weights, kind)
        mu_a, mu_b = neurons(act_a / tok_a), neurons(act_b / tok_b)
        if "topk" in metrics:
            out["topk"] = 1 - topk_iou(mu_a, mu_b, k)
        if "rank_corr" in metrics:
            out["rank_corr"] = 1 - spearman_last(mu_a, mu_b)
    if "auroc" in metrics:
        if kind == "perm":
            # Midranks of the pooled sample do not change under relabelling, so the rank sum of
            # label A is linear in the signs (Mann-Whitney U = R_A - n(n+1)/2).
            n = prep.pair.n_examples
            rank_a, _ = prep.label_sums("rank", weights, kind)
            auc = (rank_a - n * (n + 1) / 2) / (n * n)
        else:
            auc = prep.auroc_weighted(weights)
        out["auroc"] = layer_mean((2 * auc - 1).abs())
    return out


def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def pair_score_draws(
    pair: PairTensors,
    metrics: Sequence[str] = PAIR_METRICS,
    n_permutations: int = 1000,
    n_bootstrap: int = 200,
    k: int | None = None,
    seed: int = 0,
    chunk: int = _CHUNK,
) -> dict[str, ScoreDraws]:
    """Observed, permuted and bootstrapped layer scores of each metric for one language pair.

    Args:
        pair: Aligned per-example tensors.
        metrics: Which layer scores (module docstring).
        n_permutations: Within-pair relabellings (0 for none).
        n_bootstrap: Resamples of pairs with replacement (0 for none).
        k: Top-k size for ``topk`` (default: 5% of d_mlp).
        seed: Seeds the permutations and the resamples (the same draws for every metric).
        chunk: Draws per matrix product.

    Returns:
        ``{metric: ScoreDraws}``.
    """
    generator = torch.Generator().manual_seed(seed)
    signs = permutation_signs(n_permutations, pair.n_examples, generator)
    counts = bootstrap_counts(n_bootstrap, pair.n_examples, generator)
    return scores_under_draws(pair, metrics, signs, counts, k, chunk)


def scores_under_draws(
    pair: PairTensors,
    metrics: Sequence[str],
    signs: Float[Tensor, "perm example"] | None,
    counts: Float[Tensor, "boot example"] | None,
    k: int | None = None,
    chunk: int = _CHUNK,
) -> dict[str, ScoreDraws]:
    """Layer scores of the data as labelled and under the given relabellings and resamples.

    Args:
        pair: Aligned per-example tensors.
        metrics: Which layer scores.
        signs: ``+1`` keep / ``-1`` swap, per permutation and example (``None``: no permutations).
        counts: Draw counts per resample and example (``None``: no bootstrap).
        k: Top-k size for ``topk`` (default: 5% of d_mlp).
        chunk: Draws per matrix product.
    """
    unknown = sorted(set(metrics) - set(PAIR_METRICS))
    if unknown:
        raise MlingualityError(
            f"unknown pair metric {unknown[0]!r}; choose from {', '.join(PAIR_METRICS)}"
        )
    k = default_k(pair.d_mlp) if k is None else k
    prep = _Prepared(pair, metrics)
    identity = torch.ones(1, pair.n_examples)  # every sign +1: the data as labelled
    observed = _scores_for_draws(prep, metrics, identity, "perm", k)
    results = {m: ScoreDraws(observed=observed[m][0].double()) for m in metrics}
    for kind, weights, attr in (("perm", signs, "permuted"), ("boot", counts, "bootstrap")):
        if weights is None or weights.shape[0] == 0:
            continue
        if weights.shape[1] != pair.n_examples:
            raise MlingualityError(
                f"{attr} draws cover {weights.shape[1]} examples, the pair has {pair.n_examples}"
            )
        parts: dict[str, list[Tensor]] = {m: [] for m in metrics}
        for part in _chunks(weights.shape[0], chunk):
            scores = _scores_for_draws(prep, metrics, weights[part].float(), kind, k)
            for m in metrics:
                parts[m].append(scores[m])
        for m in metrics:
            setattr(results[m], attr, torch.cat(parts[m]).double())
    return results
