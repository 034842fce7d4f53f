"""Tests for mlinguality.selectivity.overlap: language x language neuron overlap and clustering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlinguality.activations.stats import ActivationStats
from mlinguality.selectivity.overlap import (
    cluster_languages,
    firing_excess,
    language_overlap,
    layer_bands,
    mean_within,
    plot_language_overlap,
)


def _stats(rates: dict[str, torch.Tensor], n_tokens: int = 1000) -> dict[str, ActivationStats]:
    out = {}
    for lang, rate in rates.items():
        s = ActivationStats.empty(lang, rate.shape[0], rate.shape[1], gated=True)
        s.n_tokens = n_tokens
        s.n_gate_positive = (rate * n_tokens).round().long()
        out[lang] = s
    return out


def _families(seed: int = 0) -> dict[str, ActivationStats]:
    """Two families of two languages: each family raises the firing of its own neurons."""
    g = torch.Generator().manual_seed(seed)
    base = 0.2 + 0.1 * torch.rand(8, 100, generator=g)
    rates = {}
    for family, langs in (("a", ("a1", "a2")), ("b", ("b1", "b2"))):
        boost = torch.zeros(8, 100)
        boost[:, :20] = 0.3 if family == "a" else 0.0
        boost[:, 20:40] = 0.3 if family == "b" else 0.0
        for lang in langs:
            rates[lang] = (base + boost + 0.05 * torch.rand(8, 100, generator=g)).clamp(0, 1)
    return _stats(rates)


def test_iou_and_correlation_match_naive_sets():
    stats = _families()
    table = language_overlap(stats, k=5)
    excess = firing_excess(stats)
    langs = list(stats)
    for band, layers in layer_bands(8).items():
        sets = {
            lang: {(layer, int(n)) for layer in layers for n in excess[i, layer].topk(5).indices}
            for i, lang in enumerate(langs)
        }
        for i, a in enumerate(langs):
            for j, b in enumerate(langs):
                row = table[(table.band == band) & (table.lang_a == a) & (table.lang_b == b)]
                expected = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
                assert row.iou.item() == pytest.approx(expected, rel=1e-12)
                x = excess[i, layers].flatten().double().numpy()
                y = excess[j, layers].flatten().double().numpy()
                assert row.correlation.item() == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)


def test_clustering_recovers_planted_families(tmp_path):
    table = language_overlap(_families(), k=5)
    for band in ("first", "middle", "last"):
        order, tree = cluster_languages(table, band)
        assert sorted(order) == ["a1", "a2", "b1", "b2"]
        assert abs(order.index("a1") - order.index("a2")) == 1
        assert "(a1, a2)" in tree or "(a2, a1)" in tree
        within = mean_within(table, band, {"A": ("a1", "a2"), "B": ("b1", "b2")})
        assert within["A"] > 0.5 > within["between families"]
    assert plot_language_overlap(table, tmp_path / "overlap.png").stat().st_size > 5000
