"""Tests for mlinguality.selectivity.resampling: loop oracles, explicitly relabelled data, BH."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.pairs import PairTensors
from mlinguality.selectivity.resampling import (
    PAIR_METRICS,
    benjamini_hochberg,
    bootstrap_counts,
    pair_score_draws,
    percentile_ci,
    permutation_p_value,
    permutation_signs,
    scores_under_draws,
    shifted_percentile_ci,
)
from tests.synthetic import random_pair
from tests.utils import assert_close


def naive_scores(pair: PairTensors, k: int) -> dict[str, np.ndarray]:
    """Every layer score by per-neuron loops in float64 (the oracle)."""
    xa, xb = pair.mean_a.double().numpy(), pair.mean_b.double().numpy()
    fa, fb = pair.frac_a.double().numpy(), pair.frac_b.double().numpy()
    na, nb = pair.n_tokens_a.double().numpy(), pair.n_tokens_b.double().numpy()
    n_ex, n_layers, d_mlp = xa.shape
    out = {m: np.zeros(n_layers) for m in PAIR_METRICS}
    for layer in range(n_layers):
        mu_a = [(na * xa[:, layer, n]).sum() / na.sum() for n in range(d_mlp)]
        mu_b = [(nb * xb[:, layer, n]).sum() / nb.sum() for n in range(d_mlp)]
        for n in range(d_mlp):
            a, b = xa[:, layer, n], xb[:, layer, n]
            out["mean_diff"][layer] += abs(a.mean() - b.mean()) / d_mlp
            pooled = ((n_ex - 1) * a.var(ddof=1) + (n_ex - 1) * b.var(ddof=1)) / (2 * n_ex - 2)
            out["cohens_d"][layer] += abs(a.mean() - b.mean()) / np.sqrt(pooled) / d_mlp
            pa = (na * fa[:, layer, n]).sum() / na.sum()
            pb = (nb * fb[:, layer, n]).sum() / nb.sum()
            out["prob_diff"][layer] += abs(pa - pb) / d_mlp
            wins = sum((ai > bj) + 0.5 * (ai == bj) for ai in a for bj in b)
            out["auroc"][layer] += abs(2 * wins / n_ex**2 - 1) / d_mlp
        top_a = set(sorted(range(d_mlp), key=lambda n: -mu_a[n])[:k])
        top_b = set(sorted(range(d_mlp), key=lambda n: -mu_b[n])[:k])
        out["topk"][layer] = 1 - len(top_a & top_b) / len(top_a | top_b)
        out["rank_corr"][layer] = 1 - spearmanr(mu_a, mu_b).statistic
    return out


def relabelled(pair: PairTensors, signs: torch.Tensor) -> PairTensors:
    """The pair with A and B swapped wherever the sign is -1."""
    keep = signs > 0

    def pick(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = keep.view(-1, *([1] * (a.dim() - 1)))  # [example, 1, ...]
        return torch.where(k, a, b), torch.where(k, b, a)

    mean_a, mean_b = pick(pair.mean_a, pair.mean_b)
    frac_a, frac_b = pick(pair.frac_a, pair.frac_b)
    n_a, n_b = pick(pair.n_tokens_a, pair.n_tokens_b)
    return PairTensors("aa", "bb", mean_a, mean_b, frac_a, frac_b, n_a, n_b)


def resampled(pair: PairTensors, counts: torch.Tensor) -> PairTensors:
    """The pair with example e repeated counts[e] times."""
    reps = counts.long()

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(reps, dim=0)

    return PairTensors(
        "aa",
        "bb",
        rep(pair.mean_a),
        rep(pair.mean_b),
        rep(pair.frac_a),
        rep(pair.frac_b),
        rep(pair.n_tokens_a),
        rep(pair.n_tokens_b),
    )


# --- observed scores vs the loop oracle --------------------------------------------------------


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_observed_scores_match_loop_oracle(metric):
    pair = random_pair(seed=1, shift=torch.linspace(0, 1, 12))
    k = 4
    draws = scores_under_draws(pair, [metric], None, None, k=k)
    assert_close(draws[metric].observed, naive_scores(pair, k)[metric], kind="fp32")


def test_auroc_with_ties_matches_loop_oracle():
    pair = random_pair(seed=2, ties=True)
    assert (pair.mean_a[:, :, :, None] == pair.mean_b[:, :, None, :]).any()  # ties exist
    draws = scores_under_draws(pair, ["auroc"], None, None)
    assert_close(draws["auroc"].observed, naive_scores(pair, 3)["auroc"], kind="fp32")


# --- permutations and bootstrap vs explicitly relabelled / resampled data ----------------------


@pytest.mark.parametrize("ties", [False, True])
def test_permuted_scores_equal_scores_of_swapped_data(ties):
    pair = random_pair(seed=3, ties=ties)
    signs = permutation_signs(5, pair.n_examples, torch.Generator().manual_seed(0))
    assert (signs == -1).any() and (signs == 1).any()
    metrics = list(PAIR_METRICS) if not ties else ["mean_diff", "cohens_d", "prob_diff", "auroc"]
    draws = scores_under_draws(pair, metrics, signs, None, k=3, chunk=2)
    for row, sign in enumerate(signs):
        swapped = scores_under_draws(relabelled(pair, sign), metrics, None, None, k=3)
        for m in metrics:
            assert_close(draws[m].permuted[row], swapped[m].observed, kind="fp32", msg=m)


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_scores_equal_scores_of_resampled_data(ties):
    pair = random_pair(seed=4, ties=ties)
    counts = bootstrap_counts(4, pair.n_examples, torch.Generator().manual_seed(1))
    assert counts.sum(1).eq(pair.n_examples).all() and (counts == 0).any()
    metrics = list(PAIR_METRICS) if not ties else ["mean_diff", "cohens_d", "prob_diff", "auroc"]
    draws = scores_under_draws(pair, metrics, None, counts, k=3, chunk=3)
    for row, count in enumerate(counts):
        direct = scores_under_draws(resampled(pair, count), metrics, None, None, k=3)
        for m in metrics:
            assert_close(draws[m].bootstrap[row], direct[m].observed, kind="fp32", msg=m)


def test_identity_permutation_ties_with_observed():
    pair = random_pair(seed=5)
    draws = scores_under_draws(pair, PAIR_METRICS, torch.ones(3, pair.n_examples), None)
    for m in PAIR_METRICS:
        assert_close(draws[m].permuted, draws[m].observed.expand(3, -1), kind="fp32", msg=m)
        assert (draws[m].p_values() == 1.0).all(), m


def test_all_swapped_is_the_same_pair_reversed():
    pair = random_pair(seed=6)
    draws = scores_under_draws(pair, PAIR_METRICS, -torch.ones(1, pair.n_examples), None)
    for m in PAIR_METRICS:  # every score is symmetric in A and B
        assert_close(draws[m].permuted[0], draws[m].observed, kind="fp32", msg=m)


# --- small pieces ------------------------------------------------------------------------------


def test_permutation_p_value_counts_ties_and_adds_one():
    observed = torch.tensor([2.0, 0.5])
    null = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 0.0]])
    assert_close(permutation_p_value(observed, null), torch.tensor([3 / 4, 3 / 4]), kind="exact")


def test_percentile_ci_matches_numpy():
    draws = torch.randn(500, 3, dtype=torch.float64)
    low, high = percentile_ci(draws, 0.9)
    assert_close(low, np.quantile(draws.numpy(), 0.05, axis=0), kind="exact")
    assert_close(high, np.quantile(draws.numpy(), 0.95, axis=0), kind="exact")
    with pytest.raises(MlingualityError, match="confidence level"):
        percentile_ci(draws, 1.5)


def test_draws_are_seeded_and_bootstrap_counts_sum_to_n():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(permutation_signs(4, 7, g1), permutation_signs(4, 7, g2))
    counts = bootstrap_counts(50, 7, torch.Generator().manual_seed(0))
    assert counts.sum(1).eq(7).all() and counts.min() >= 0


def test_bad_inputs_raise():
    pair = random_pair()
    with pytest.raises(MlingualityError, match="unknown pair metric 'nope'"):
        scores_under_draws(pair, ["nope"], None, None)
    with pytest.raises(MlingualityError, match="cover 3 examples"):
        scores_under_draws(pair, ["mean_diff"], torch.ones(2, 3), None)
    with pytest.raises(MlingualityError, match="0 < k <= d_mlp"):
        scores_under_draws(pair, ["topk"], None, None, k=0)


def test_shifted_percentile_ci_centres_on_the_observed_value():
    draws = torch.tensor([[2.0], [3.0], [4.0], [5.0], [6.0]])
    low, high = shifted_percentile_ci(torch.tensor([1.0]), draws, 0.5)
    # percentile interval [3, 5], bootstrap mean 4, bias 3
    assert_close(low, torch.tensor([0.0]), kind="exact")
    assert_close(high, torch.tensor([2.0]), kind="exact")


def test_pair_score_draws_draws_signs_then_counts_from_one_seeded_generator():
    pair = random_pair(seed=8)
    got = pair_score_draws(
        pair, ["mean_diff", "topk"], n_permutations=6, n_bootstrap=5, k=3, seed=9
    )
    generator = torch.Generator().manual_seed(9)
    signs = permutation_signs(6, pair.n_examples, generator)
    counts = bootstrap_counts(5, pair.n_examples, generator)  # after the signs, same generator
    expected = scores_under_draws(pair, ["mean_diff", "topk"], signs, counts, k=3)
    for m in ("mean_diff", "topk"):
        assert torch.equal(got[m].permuted, expected[m].permuted), m
        assert torch.equal(got[m].bootstrap, expected[m].bootstrap), m
    assert got["mean_diff"].permuted.shape == (6, pair.n_layers)
    assert got["mean_diff"].bootstrap.shape == (5, pair.n_layers)


# --- Benjamini-Hochberg ------------------------------------------------------------------------


def _naive_bh(p: list[float]) -> list[float]:
    """q_i = min over p_j >= p_i of p_j * m / rank_j (the definition, by loops)."""
    m = len(p)
    ranks = {
        i: 1 + sum(p[j] < p[i] or (p[j] == p[i] and j < i) for j in range(m)) for i in range(m)
    }
    return [
        min(1.0, min(p[j] * m / ranks[j] for j in range(m) if ranks[j] >= ranks[i]))
        for i in range(m)
    ]


def test_benjamini_hochberg_matches_the_definition():
    generator = torch.Generator().manual_seed(0)
    p = torch.rand(40, generator=generator) ** 3
    p[5] = p[9]  # a tie
    expected = torch.tensor(_naive_bh(p.tolist()), dtype=torch.float64)
    assert_close(benjamini_hochberg(p), expected, "exact")
    # hand-computed: sorted 0.01, 0.03, 0.04 -> 0.03, 0.04, 0.04 (monotone), NaN left out of m
    q = benjamini_hochberg(torch.tensor([0.04, 0.01, float("nan"), 0.03], dtype=torch.float64))
    assert q[[0, 1, 3]].tolist() == pytest.approx([0.04, 0.03, 0.04], rel=1e-12)
    assert math.isnan(q[2])
    assert torch.isnan(benjamini_hochberg(torch.tensor([float("nan")]))).all()


def test_benjamini_hochberg_hand_computation_in_shuffled_order():
    # sorted p: 0.001 0.008 0.039 0.041 0.042 0.060 0.074 0.205 (m = 8)
    # p * m / rank: 0.008 0.032 0.104 0.082 0.0672 0.080 0.0846 0.205
    # running min from the right: 0.008 0.032 0.0672 0.0672 0.0672 0.080 0.0846 0.205
    sorted_q = {
        0.001: 0.008,
        0.008: 0.032,
        0.039: 0.0672,
        0.041: 0.0672,
        0.042: 0.0672,
        0.060: 0.080,
        0.074: 0.074 * 8 / 7,
        0.205: 0.205,
    }
    shuffled = [0.060, 0.205, 0.001, 0.042, 0.074, 0.008, 0.041, 0.039]
    q = benjamini_hochberg(torch.tensor(shuffled, dtype=torch.float64))
    assert q.tolist() == pytest.approx([sorted_q[p] for p in shuffled], rel=1e-12)
    # NaN entries are not part of the family: the same q-values with NaNs interleaved
    nan = float("nan")
    with_nan = torch.tensor([nan, *shuffled[:4], nan, *shuffled[4:]], dtype=torch.float64)
    q_nan = benjamini_hochberg(with_nan)
    assert torch.isnan(q_nan[[0, 5]]).all()
    assert_close(q_nan[[1, 2, 3, 4, 6, 7, 8, 9]], q, "exact")
