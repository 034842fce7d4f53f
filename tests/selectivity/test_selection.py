"""Tests for mlinguality.selectivity.selection against loop implementations and planted neurons."""

from __future__ import annotations

import math

import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.selection import one_vs_rest_scores, select_language_neurons
from tests.synthetic import make_langs
from tests.utils import assert_close


def tang_lape_loop(stats, top_rate, filter_rate, bar_rate):
    """Tang et al.'s identify.py rule, written out with loops over (layer, neuron, language)."""
    langs = list(stats)
    n_layers, d_mlp = stats[langs[0]].sum.shape
    probs = {
        (layer, n, lang): stats[lang].n_gate_positive[layer, n].item() / stats[lang].n_tokens
        for layer in range(n_layers)
        for n in range(d_mlp)
        for lang in langs
    }
    values = sorted(probs.values())
    filter_bar = values[round(len(values) * filter_rate) - 1]  # kthvalue is 1-based
    activation_bar = values[round(len(values) * bar_rate) - 1]
    candidates = []
    for layer in range(n_layers):
        for n in range(d_mlp):
            p = [probs[layer, n, lang] for lang in langs]
            if not any(x > filter_bar for x in p):
                continue
            q = [x / sum(p) for x in p]  # some p > filter_bar >= 0, so the sum is positive
            candidates.append((-sum(x * math.log(x) for x in q if x > 0), layer, n))
    candidates.sort()
    chosen = candidates[: round(n_layers * d_mlp * top_rate)]
    return {
        lang: {(layer, n) for _, layer, n in chosen if probs[layer, n, lang] > activation_bar}
        for lang in langs
    }


@pytest.mark.parametrize(
    "top_rate,filter_rate,bar_rate", [(0.1, 0.95, 0.95), (0.2, 0.8, 0.9), (0.05, 0.5, 0.5)]
)
def test_lape_selection_matches_loop_implementation_of_tang(top_rate, filter_rate, bar_rate):
    shift = {
        "en": torch.zeros(4, 8).index_fill_(1, torch.tensor([0, 1]), 1.5),
        "ru": torch.zeros(4, 8).index_fill_(1, torch.tensor([5]), 2.0),
    }
    stats = make_langs(["en", "fr", "ru"], n_examples=20, shift=shift, seed=2, baseline_sd=0.0)
    masks = select_language_neurons(
        stats,
        "lape",
        top_rate=top_rate,
        activation_bar_quantile=bar_rate,
        filter_quantile=filter_rate,
    )
    expected = tang_lape_loop(stats, top_rate, filter_rate, bar_rate)
    for lang in stats:
        got = {tuple(idx) for idx in masks[lang].nonzero().tolist()}
        assert got == expected[lang], lang
    assert sum(len(v) for v in expected.values()) > 0  # the comparison is not vacuous


def test_lape_selects_the_planted_neurons():
    shift = {"ru": torch.zeros(4, 8)}
    shift["ru"][[0, 3], 2] = 4.0  # neuron 2 of layers 0 and 3 fires only in Russian
    shift["fr"] = -shift["ru"].clone()
    shift["en"] = -shift["ru"].clone()
    stats = make_langs(["en", "fr", "ru"], n_examples=20, shift=shift, seed=3, baseline_sd=0.0)
    masks = select_language_neurons(stats, "lape", k=2)
    assert masks["ru"].nonzero().tolist() == [[0, 2], [3, 2]]
    assert not masks["en"].any() and not masks["fr"].any()


@pytest.mark.parametrize("metric", ["cohens_d", "prob_diff", "mean_diff", "auroc"])
def test_one_vs_rest_selection_takes_the_best_scores(metric):
    shift = {"fr": torch.zeros(4, 8)}
    shift["fr"][1, 3] = 3.0
    stats = make_langs(["en", "fr", "ru"], n_examples=15, shift=shift, seed=4)
    scores = one_vs_rest_scores(stats, metric)
    masks = select_language_neurons(stats, metric, k=3)
    for lang, score in scores.items():
        best = sorted(range(32), key=lambda i: -score.flatten()[i].item())[:3]
        assert set(masks[lang].flatten().nonzero().flatten().tolist()) == set(best)
    assert masks["fr"][1, 3]
    by_rate = select_language_neurons(stats, metric, top_rate=0.25)
    assert all(int(m.sum()) == 8 for m in by_rate.values())
    bar = float(scores["fr"].median())
    by_threshold = select_language_neurons(stats, metric, threshold=bar)
    assert torch.equal(by_threshold["fr"], scores["fr"] >= bar)


def test_one_vs_rest_cohens_d_uses_the_equal_weight_mixture():
    stats = make_langs(["en", "fr", "ru"], seed=5)
    got = one_vs_rest_scores(stats, "cohens_d")["en"]
    rest = [stats["fr"], stats["ru"]]
    mix_mean = (rest[0].mean + rest[1].mean) / 2
    mix_var = (rest[0].var + rest[0].mean ** 2 + rest[1].var + rest[1].mean ** 2) / 2 - mix_mean**2
    n_a, n_r = stats["en"].n_tokens, rest[0].n_tokens + rest[1].n_tokens
    pooled = ((n_a - 1) * stats["en"].var + (n_r - 1) * mix_var) / (n_a + n_r - 2)
    assert_close(got, (stats["en"].mean - mix_mean) / pooled.sqrt(), kind="exact")
    mean_scores = one_vs_rest_scores(stats, "mean_diff")["en"]
    assert_close(mean_scores, stats["en"].mean - mix_mean, kind="exact")


def test_bad_arguments_raise(without_typechecks):
    stats = make_langs(["en", "fr"], seed=12)
    with pytest.raises(MlingualityError, match="at least 2 languages"):
        select_language_neurons({"en": stats["en"]})
    with pytest.raises(
        MlingualityError, match="^unknown selection metric 'nope'; choose from lape"
    ):
        select_language_neurons(stats, "nope")
    with pytest.raises(MlingualityError, match="top_rate"):
        select_language_neurons(stats, "cohens_d", top_rate=2.0)
