"""Neuron cards: what they hold, how they render, and the output-language test's arithmetic."""

from __future__ import annotations

import math

import pytest

from mlinguality.activations.collect import collect
from mlinguality.corpus.adapters import as_corpus
from mlinguality.dashboards.cards import (
    NeuronCard,
    NeuronSpec,
    build_cards,
    neuron_table,
    output_language,
)
from tests.dashboards.test_contexts import TEXTS


@pytest.fixture(scope="module")
def cards(tiny_model):
    stats = collect(tiny_model, as_corpus(TEXTS), list(TEXTS))
    specs = [
        NeuronSpec(1, 5, "selected", "fr", 0.5),
        NeuronSpec(0, 3, "selected", "en", 0.4),
        NeuronSpec(1, 9, "random", "fr"),
        NeuronSpec(0, 8, "listed"),
    ]
    ids = [f"v{i}" for i in range(len(TEXTS["en"]))]
    return build_cards(tiny_model, TEXTS, specs, stats, example_ids=ids, top_k=3, window=3), stats


def test_a_card_holds_its_reads_and_writes(cards):
    built, stats = cards
    card = built[0]
    assert (card.layer, card.neuron) == (1, 5)
    assert card.title == "L1 N5 — fr (selected, score 0.5)"
    top = card.top_examples("fr")
    assert len(top) == 3 and top["activation"].is_monotonic_decreasing
    assert all(text.count("[[") == 1 for text in top["text"])
    assert set(top["example"]) <= {f"v{i}" for i in range(5)}
    assert card.data["firing"]["fr"] == pytest.approx(
        float(stats["fr"].p_gate_positive[1, 5]), rel=1e-3
    )
    hist = card.histogram("en")
    assert hist["count"].sum() == stats["en"].n_tokens  # every counted position, once
    effect = card.logit_effect()
    assert (effect["direction"] == "promoted").sum() == min(20, len(effect) // 2)
    promoted = effect[effect["direction"] == "promoted"]["effect"]
    assert promoted.is_monotonic_decreasing


def test_text_and_html_render_the_peak(cards):
    built, _ = cards
    text = built[0].to_text(top=2)
    assert text.startswith("L1 N5 — fr (selected") and "[[" in text and "promoted:" in text
    page = built[0]._repr_html_()
    assert page.startswith("<div") and "L1 N5" in page and "outline:1px solid" in page
    assert "<script" not in page  # a notebook cell renders without running code


def test_output_language_averages_the_cards(cards):
    built, _ = cards
    table = output_language(built)
    assert set(zip(table["lang"], table["set"], strict=True)) == {
        ("fr", "selected"),
        ("en", "selected"),
        ("fr", "random"),
    }
    row = table[(table["lang"] == "fr") & (table["set"] == "selected")].iloc[0]
    data = built[0].data
    assert row["own_share"] == pytest.approx(data["own_share"])
    others = [v for k, v in data["lang_effect"].items() if k != "fr" and v is not None]
    expected = data["lang_effect"]["fr"] - sum(others) / len(others)
    assert row["own_minus_other_effect"] == pytest.approx(expected)


def test_own_share_counts_the_promoted_tokens_of_its_language(cards):
    built, _ = cards
    for card in built:
        if card.data["lang"] is None:
            assert card.data["own_share"] is None
            continue
        langs = [lang for _, _, lang in card.data["promoted"]]
        assert card.data["own_share"] == pytest.approx(langs.count(card.data["lang"]) / len(langs))


def test_neuron_table_has_a_row_per_card(cards):
    built, _ = cards
    table = neuron_table(built)
    assert list(table["set"]) == ["selected", "selected", "random", "listed"]
    assert {"firing_en", "firing_fr", "own_share", "top_promoted"} <= set(table.columns)
    assert math.isnan(table["score"].iloc[3]) or table["score"].iloc[3] is None


def test_a_card_without_contexts_in_a_language_still_renders():
    data = {
        "layer": 0,
        "neuron": 1,
        "set": "listed",
        "lang": None,
        "score": None,
        "firing": {"en": 0.1},
        "promoted": [],
        "suppressed": [],
        "own_share": None,
        "hist": {"edges": [0.0, 1.0], "counts": {"en": [0]}},
        "contexts": {"en": []},
    }
    card = NeuronCard(data, ["en"])
    assert card.top_examples("en").empty and "L0 N1 (listed)" in card.to_text()


def test_language_effects_are_means_over_each_languages_tokens(cards, tiny_model):
    """Oracle: the full-vocabulary centred effect, averaged over the tokens assigned to each
    language by the token table, in a plain loop."""
    from mlinguality.dashboards.logits import centred, direct_logit_effect
    from mlinguality.dashboards.token_language import token_languages

    built, _ = cards
    table = token_languages(tiny_model.tokenizer, TEXTS, vocab_size=tiny_model.cfg.d_vocab)
    for card in built:
        full = centred(direct_logit_effect(tiny_model, [(card.layer, card.neuron)]))[0]
        for index, lang in enumerate(table.langs):
            ids = [t for t in range(len(full)) if int(table.assigned[t]) == index]
            expected = sum(float(full[t]) for t in ids) / len(ids) if ids else None
            got = card.data["lang_effect"][lang]
            assert (got is None) == (expected is None)
            if got is not None:
                assert got == pytest.approx(expected, rel=2e-3, abs=1e-6)  # 4 digits kept


def test_permutation_p_agrees_with_scipy():
    import numpy as np
    from scipy.stats import permutation_test

    from mlinguality.dashboards.cards import permutation_p

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 30), rng.normal(0, 1, 40)
    ours = permutation_p(a.tolist(), b.tolist(), 4000, seed=1)
    theirs = permutation_test(
        (a, b), lambda x, y: x.mean() - y.mean(), n_resamples=4000, random_state=2
    ).pvalue
    assert abs(ours - theirs) < 0.03  # two Monte Carlo estimates of one p (sd ~0.008 each)
    assert permutation_p([1.0, 1.0], [1.0, 1.0], 100) == 1.0
