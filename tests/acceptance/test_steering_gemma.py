"""Slow acceptance: steering on Gemma 3 270M (a few minutes on 2 CPU cores).

The real model is where the TransformerLens 4.3 KV-cache problem showed up (docs/steering.md):
steered generation with the cache must equal the same generation without it, and the
intervention must change what the model writes.
"""

from __future__ import annotations

import pytest

from mlinguality.activations.collect import collect
from mlinguality.corpus import load_corpus
from mlinguality.selectivity.selection import select_language_neurons
from mlinguality.steering import generate, language_intervention, steering_hooks
from mlinguality.steering.config import SteeringConfig
from mlinguality.steering.experiment import steering_experiment, summarize
from mlinguality.steering.language_id import LanguageIdentifier, first_words

pytestmark = pytest.mark.slow

LANGS = ["en", "fr"]


@pytest.fixture(scope="module")
def selected(gemma):
    corpus = load_corpus("bible", LANGS, books="Matthew", limit=40, seed=0)
    select, held_out = corpus.split(eval_fraction=0.25)
    stats = collect(gemma, select, LANGS, per_example=True, progress=False)
    masks = select_language_neurons(stats, "lape", top_rate=0.01)
    prompts = {lang: [first_words(t, 5) for t in held_out.texts(lang)[:6]] for lang in LANGS}
    return stats, masks, prompts, held_out


def test_steered_generation_with_and_without_the_kv_cache_is_identical(gemma, selected):
    stats, masks, prompts, _ = selected
    chosen = language_intervention(stats, masks, "en", "fr", deactivate="zero", activate="mean")
    runs = [
        generate(
            gemma,
            prompts["en"][:3],
            max_new_tokens=8,
            hooks=steering_hooks(gemma, chosen.with_alpha(2.0), "all"),
            use_cache=cached,
        )
        for cached in (True, False)
    ]
    assert runs[0].new_ids == runs[1].new_ids
    plain = generate(gemma, prompts["en"][:3], max_new_tokens=8)
    assert plain.new_ids != runs[0].new_ids, "alpha=2 on the en/fr neurons changes the output"


def test_experiment_tables_and_identifier_accuracy(gemma, selected):
    stats, masks, prompts, held_out = selected
    identifier = LanguageIdentifier()
    accuracy = identifier.accuracy({lang: held_out.texts(lang) for lang in LANGS})
    assert min(accuracy.values()) >= 0.8, accuracy  # py3langid on Bible verses
    settings = SteeringConfig(alphas=[2.0], max_new_tokens=12, n_random=1, batch_size=6)
    rows = steering_experiment(gemma, stats, masks, prompts, [("en", "fr")], settings, identifier)
    summary = {row["condition"]: row for row in summarize(rows, accuracy)}
    assert set(summary) == {"none", "steer", "random"}
    assert all(row["n"] == 6 for row in summary.values())
    # unsteered English prompts continue in English (the identifier and the model agree)
    assert summary["none"]["share_source"] >= 0.5, summary["none"]
    print(
        {
            k: {m: v[m] for m in ("share_target", "share_source", "bits_per_byte")}
            for k, v in summary.items()
        }
    )
