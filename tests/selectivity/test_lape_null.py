"""Tests for gate-based firing (prob_diff, per-example shares) and the LAPE permutation null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.selectivity.lape_null import lape_share_draws
from mlinguality.selectivity.profile import selectivity_profile
from mlinguality.selectivity.scores import aligned_pair
from mlinguality.selectivity.selection import one_vs_rest_scores, select_lape
from tests.synthetic import random_mask, stats_from_raw


def _gated(langs, n_examples=30, n_tokens=6, n_layers=4, d_mlp=40, boost=None, seed=0):
    """Gated stats whose gate (not hook_post) carries the language signal: hook_post is
    independent noise, as when the gate is off and the product follows ``up``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_layers, d_mlp, generator=g) - 0.5
    out = {}
    for lang in langs:
        gate = base + torch.randn(n_examples, n_tokens, n_layers, d_mlp, generator=g)
        if boost and lang in boost:
            gate = gate + boost[lang]
        acts = torch.randn(n_examples, n_tokens, n_layers, d_mlp, generator=g)
        mask = random_mask(n_examples, n_tokens, g)
        stats = stats_from_raw(lang, acts, mask, gate)
        stats.example_frac_gate_positive = torch.stack(
            [(gate[e][mask[e]] > 0).double().mean(0) for e in range(n_examples)]
        ).float()
        out[lang] = stats
    return out


def test_firing_is_the_gate_on_gated_mlps():
    boost = torch.zeros(4, 40)
    boost[0, :10] = 3.0
    stats = _gated(["en", "fr", "ru"], boost={"fr": boost})
    fr = one_vs_rest_scores(stats, "prob_diff")["fr"]
    expected = (
        stats["fr"].p_gate_positive
        - (stats["en"].p_gate_positive + stats["ru"].p_gate_positive) / 2
    )
    assert torch.allclose(fr, expected)
    assert fr[0, :10].min() > 0.3, "the gate's language signal"
    pair = aligned_pair(stats["en"], stats["fr"])
    assert torch.equal(pair.frac_b, stats["fr"].example_frac_gate_positive)


def test_lape_null_observed_share_equals_selection_from_token_counts():
    stats = _gated(["en", "fr", "ru"], n_examples=20, seed=3)
    observed, null = lape_share_draws(stats, n_permutations=30, seed=0)
    masks = select_lape(stats)
    expected = torch.stack(list(masks.values())).any(0).double().mean(1)
    assert torch.allclose(observed, expected)
    assert null.shape == (30, 4)


def test_lape_null_is_exact_for_identical_languages():
    stats = _gated(["en"], n_examples=12, seed=4)
    copies = {}
    for lang in ("en", "fr", "ru"):
        copy = stats_from_raw(lang, torch.zeros(1, 1, 4, 40), torch.ones(1, 1, dtype=torch.bool))
        for name in vars(stats["en"]):
            if name != "lang":
                setattr(copy, name, getattr(stats["en"], name))
        copies[lang] = copy
    observed, null = lape_share_draws(copies, n_permutations=10, seed=1)
    assert torch.allclose(null, observed.expand_as(null))


def test_lape_permutation_p_values_find_the_planted_layer():
    boost = {lang: torch.zeros(4, 40) for lang in ("en", "fr", "ru")}
    for i, lang in enumerate(boost):
        boost[lang][2, 10 * i : 10 * i + 6] = 4.0  # layer 2: each language fires its own neurons
    stats = _gated(list(boost), boost=boost, seed=5)
    profile = selectivity_profile(stats, metrics=["lape"], n_permutations=99, n_bootstrap=0)
    rows = profile.layers.set_index("layer")
    assert rows.loc[2, "p_value"] < 0.05
    assert np.isfinite(rows.p_value).all() and np.isfinite(rows.q_value).all()
    assert rows.loc[2, "value"] > rows.loc[2, "null_mean"]
    with pytest.raises(Exception, match="same verses"):
        other = dict(stats)
        other["ru"].example_ids = list(reversed(other["ru"].example_ids))
        lape_share_draws(other, n_permutations=2)
