"""Tests for mlinguality.selectivity.scores against hand computations on raw synthetic activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mlinguality.errors import MlingualityError
from mlinguality.selectivity.scores import (
    activation_flatness,
    aligned_pair,
    auroc,
    average_precision,
    cohens_d,
    lape,
    mean_diff,
    prob_diff,
    rank_correlation,
    topk_overlap,
)
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
        prob_diff(stats["en"], stats["fr"], gate=False),
        prob_diff(stats["en"], stats["fr"]),  # the default on a gated MLP: the gate fires
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
        m2=fr.m2,
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


def test_misaligned_examples_raise():
    stats = make_langs(["en", "fr"], seed=11)
    stats["fr"].example_ids[0] = "other"
    with pytest.raises(
        MlingualityError, match="example ids differ.*'other' only in fr|'v0' only in en"
    ):
        aligned_pair(stats["en"], stats["fr"])


def test_bad_arguments_raise():
    stats = make_langs(["en", "fr"], seed=12)
    other = make_langs(["de"], d_mlp=4)["de"]
    with pytest.raises(MlingualityError, match="different models"):
        lape({"en": stats["en"], "de": other})
