"""Tests for mlinguality.selectivity against hand computations on raw synthetic activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mlinguality.errors import MlingualityError
from mlinguality.selectivity import (
    PROFILE_METRICS,
    activation_flatness,
    aligned_pair,
    auroc,
    average_precision,
    cohens_d,
    default_pairs,
    lape,
    layer_profile,
    mean_diff,
    one_vs_rest_scores,
    prob_diff,
    rank_correlation,
    select_language_neurons,
    selectivity_profile,
    topk_overlap,
    u_shape_statistic,
)
from mlinguality.significance import chance_iou
from tests.synthetic import make_langs, random_mask, stats_from_raw
from tests.utils import assert_close


@pytest.fixture
def raw():
    """Two languages' raw activations [example, token, layer, d_mlp], masks and gates."""
    g = torch.Generator().manual_seed(11)
    out = {}
    for lang in ("en", "fr"):
        acts = torch.randn(6, 5, 3, 4, generator=g, dtype=torch.float64)
        gate = torch.randn(6, 5, 3, 4, generator=g, dtype=torch.float64)
        out[lang] = (acts, random_mask(6, 5, g), gate)
    return out


def tokens(acts, mask, layer, neuron):
    """Every counted activation of one neuron, as a Python list (the hand computation)."""
    return [
        float(acts[e, t, layer, neuron])
        for e in range(acts.shape[0])
        for t in range(acts.shape[1])
        if mask[e, t]
    ]


def test_token_level_scores_match_hand_computation(raw):
    stats = {lang: stats_from_raw(lang, *raw[lang]) for lang in raw}
    d, md, pd_, pg = (
        cohens_d(stats["en"], stats["fr"]),
        mean_diff(stats["en"], stats["fr"]),
        prob_diff(stats["en"], stats["fr"]),
        prob_diff(stats["en"], stats["fr"], gate=True),
    )
    for layer in range(3):
        for n in range(4):
            a = tokens(raw["en"][0], raw["en"][1], layer, n)
            b = tokens(raw["fr"][0], raw["fr"][1], layer, n)
            ga = tokens(raw["en"][2], raw["en"][1], layer, n)
            gb = tokens(raw["fr"][2], raw["fr"][1], layer, n)
            pooled = ((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / (
                len(a) + len(b) - 2
            )
            assert d[layer, n] == pytest.approx((np.mean(a) - np.mean(b)) / math.sqrt(pooled))
            assert md[layer, n] == pytest.approx(np.mean(a) - np.mean(b))
            assert pd_[layer, n] == pytest.approx(
                np.mean(np.array(a) > 0) - np.mean(np.array(b) > 0)
            )
            assert pg[layer, n] == pytest.approx(
                np.mean(np.array(ga) > 0) - np.mean(np.array(gb) > 0)
            )


def test_lape_matches_hand_formula():
    stats = make_langs(["en", "fr", "ru"], seed=1)
    entropy, probs = lape(stats)
    for layer in range(4):
        for n in range(8):
            p = [s.n_gate_positive[layer, n].item() / s.n_tokens for s in stats.values()]
            q = [x / sum(p) if sum(p) else 0.0 for x in p]  # never fires: entropy 0 (as Tang)
            expected = -sum(x * math.log(x) for x in q if x > 0)
            assert entropy[layer, n] == pytest.approx(expected)
            assert_close(probs[:, layer, n], torch.tensor(p, dtype=torch.float64), kind="exact")


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


def test_auroc_and_average_precision_match_loops():
    stats = make_langs(["en", "fr", "ru"], n_examples=7, seed=6)
    auc = auroc(stats["en"], [stats["fr"], stats["ru"]])
    ap = average_precision(stats["en"], [stats["fr"], stats["ru"]])
    for layer in range(4):
        for n in range(8):
            pos = stats["en"].example_mean[:, layer, n].tolist()
            neg = stats["fr"].example_mean[:, layer, n].tolist()
            neg += stats["ru"].example_mean[:, layer, n].tolist()
            wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
            assert auc[layer, n] == pytest.approx(wins / (len(pos) * len(neg)))
            ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg], key=lambda x: -x[0])
            hits, precisions = 0, []
            for rank, (_, label) in enumerate(ranked, start=1):
                if label:
                    hits += 1
                    precisions.append(hits / rank)
            assert ap[layer, n] == pytest.approx(np.mean(precisions))


def test_average_precision_of_a_constant_neuron_is_the_prevalence():
    stats = make_langs(["en", "fr"], n_examples=5, seed=7)
    for s in stats.values():
        s.example_mean = torch.ones_like(s.example_mean)
    assert_close(average_precision(stats["en"], stats["fr"]), torch.full((4, 8), 0.5), kind="exact")
    assert_close(auroc(stats["en"], stats["fr"]), torch.full((4, 8), 0.5), kind="exact")


def test_topk_overlap_and_rank_correlation_match_hand_computation():
    stats = make_langs(["en", "fr"], seed=8)
    iou = topk_overlap(stats["en"], stats["fr"], k=3)
    rho = rank_correlation(stats["en"], stats["fr"])
    for layer in range(4):
        mu_en = stats["en"].mean[layer].tolist()
        mu_fr = stats["fr"].mean[layer].tolist()
        top_en = set(sorted(range(8), key=lambda n: -mu_en[n])[:3])
        top_fr = set(sorted(range(8), key=lambda n: -mu_fr[n])[:3])
        assert iou[layer] == pytest.approx(len(top_en & top_fr) / len(top_en | top_fr))
        expected = spearmanr(stats["en"].sum[layer], stats["fr"].sum[layer]).statistic
        assert rho[layer] == pytest.approx(expected)


def test_flatness_matches_loop_and_is_normalised_per_example():
    stats = make_langs(["en", "fr"], n_examples=4, seed=9)
    flat = activation_flatness(stats["en"])
    x = stats["en"].example_mean.double()
    for layer in range(4):
        values = []
        for e in range(4):
            v = x[e, layer] - x[e, layer].min()
            p = v / v.sum()
            values.append(-sum(float(q * torch.log(q)) for q in p if q > 0) / math.log(8))
        assert flat[layer] == pytest.approx(np.mean(values))
    doubled = make_langs(["en", "fr"], n_examples=4, seed=9)["en"]
    doubled = doubled.merge(_renamed(doubled))
    assert_close(activation_flatness(doubled), flat, kind="exact")  # no growth with N


def _renamed(stats):
    import dataclasses

    return dataclasses.replace(stats, example_ids=[f"{i}b" for i in stats.example_ids])


# --- alignment and bad input -------------------------------------------------------------------


def test_aligned_pair_reorders_by_example_id():
    stats = make_langs(["en", "fr"], seed=10)
    fr = stats["fr"]
    order = torch.randperm(len(fr.example_ids))
    shuffled = type(fr)(
        lang="fr",
        n_tokens=fr.n_tokens,
        sum=fr.sum,
        sum_sq=fr.sum_sq,
        n_positive=fr.n_positive,
        max=fr.max,
        example_ids=[fr.example_ids[i] for i in order],
        example_n_tokens=fr.example_n_tokens[order],
        example_mean=fr.example_mean[order],
        example_frac_positive=fr.example_frac_positive[order],
    )
    pair = aligned_pair(stats["en"], shuffled)
    assert torch.equal(pair.mean_b, fr.example_mean)
    assert torch.equal(pair.n_tokens_b, fr.example_n_tokens.float())


def test_misaligned_or_missing_examples_raise():
    stats = make_langs(["en", "fr"], seed=11)
    stats["fr"].example_ids[0] = "other"
    with pytest.raises(
        MlingualityError, match="example ids differ.*'other' only in fr|'v0' only in en"
    ):
        aligned_pair(stats["en"], stats["fr"])
    stats = make_langs(["en", "fr"], seed=11)
    stats["fr"].example_mean = None
    with pytest.raises(MlingualityError, match="fr lack example_mean"):
        selectivity_profile(stats, metrics=["cohens_d"], n_permutations=5, n_bootstrap=0)


def test_bad_arguments_raise():
    stats = make_langs(["en", "fr"], seed=12)
    with pytest.raises(MlingualityError, match="at least 2 languages"):
        select_language_neurons({"en": stats["en"]})
    with pytest.raises((MlingualityError, TypeError)):  # jaxtyping's Literal check under pytest
        select_language_neurons(stats, "nope")
    with pytest.raises(MlingualityError, match="top_rate"):
        select_language_neurons(stats, "cohens_d", top_rate=2.0)
    with pytest.raises(MlingualityError, match="no stats for 'de'"):
        layer_profile(stats, pairs=[("en", "de")], n_permutations=5)
    with pytest.raises(MlingualityError, match="unknown profile metric"):
        layer_profile(stats, metrics=["nope"])
    other = make_langs(["de"], d_mlp=4)["de"]
    with pytest.raises(MlingualityError, match="different models"):
        lape({"en": stats["en"], "de": other})


# --- the profile -------------------------------------------------------------------------------


def test_profile_recovers_planted_edge_signal():
    n_layers, d_mlp = 8, 64
    shift = torch.zeros(n_layers, d_mlp)
    shift[[0, n_layers - 1], :16] = 2.0
    shift[[0, n_layers - 1], 16:32] = -2.0
    stats = make_langs(
        ["en", "fr", "ru"],
        n_examples=30,
        n_tokens=3,
        n_layers=n_layers,
        d_mlp=d_mlp,
        shift={"ru": shift},
        seed=13,
    )
    profile = selectivity_profile(stats, n_permutations=199, n_bootstrap=30, k=16, seed=0)
    rows = profile.layers
    assert set(rows.metric) == set(PROFILE_METRICS)
    assert set(rows[rows.metric == "cohens_d"].pair) == {"en-fr", "en-ru"}
    d_ru = rows[(rows.metric == "cohens_d") & (rows.pair == "en-ru")].set_index("layer")
    assert d_ru.loc[0, "p_value"] < 0.01 and d_ru.loc[n_layers - 1, "p_value"] < 0.01
    assert (d_ru.ci_low < d_ru.value).all() and (d_ru.value < d_ru.ci_high).all()
    assert u_shape_statistic(torch.tensor(d_ru.value.to_numpy())) > 1
    u = profile.u_shape.set_index(["metric", "pair"])
    for metric in ("cohens_d", "mean_diff", "auroc", "topk", "rank_corr"):
        assert u.loc[(metric, "en-ru"), "u"] > 1, metric
        assert u.loc[(metric, "en-ru"), "p_value"] < 0.01, metric
    assert u.loc[("cohens_d", "en-fr"), "p_value"] > 0.01  # en and fr differ only by noise
    topk = rows[(rows.metric == "topk")]
    assert np.allclose(topk.chance, 1 - chance_iou(16, d_mlp))
    assert set(rows[rows.metric == "flatness"].pair) == {"en", "fr", "ru"}
    assert rows[rows.metric == "lape"].value.between(0, 1).all()


def test_default_pairs_anchor_on_english():
    assert default_pairs(["fr", "en", "ru"]) == [("en", "fr"), ("en", "ru")]
    assert default_pairs(["fr", "de"]) == [("fr", "de")]
