"""ParallelCorpus: building with drops, language access, sampling and id-hashed splits."""

from __future__ import annotations

import pytest

from mlinguality.corpus import (
    CleaningConfig,
    ParallelCorpus,
    ParallelExample,
    RawExample,
    build_corpus,
    split_score,
)
from mlinguality.errors import MlingualityError


def make_corpus(n: int, langs=("en", "fr")) -> ParallelCorpus:
    examples = [
        ParallelExample(f"x:{i}", {lang: f"{lang} text {i}" for lang in langs}) for i in range(n)
    ]
    return ParallelCorpus(examples, list(langs), source="made")


def test_build_corpus_cleans_and_counts_drops_by_reason_and_language():
    rows = [
        RawExample(
            "a", {"en": "(1:1) In the beginning", "fr": "Au commencement", "ru": "В начале"}
        ),
        RawExample("b", {"en": "-", "fr": "...", "ru": "Слово"}),  # en and fr empty
        RawExample("c", {"en": "Text", "fr": "(ADDED FROM KJV: x)", "ru": "-"}),  # editorial wins
        RawExample("d", {"en": "And God said", "fr": "Dieu dit", "ru": "И сказал Бог"}),
    ]
    corpus = build_corpus(rows, ["en", "fr", "ru"], source="rows")
    assert corpus.ids == ["a", "d"]
    assert corpus.texts("en") == ["In the beginning", "And God said"]
    assert corpus.drops == {"editorial": 1, "empty": 1}
    assert corpus.drops_by_lang == {
        "en": {"empty": 1},
        "fr": {"empty": 1, "editorial": 1},
        "ru": {"empty": 1},
    }


def test_build_corpus_drops_length_ratio_outliers():
    # Nine ordinary pairs (fr 10% longer) and one where fr is 5x the norm.
    rows = [RawExample(f"r{i}", {"en": "e" * 20, "fr": "f" * 22}) for i in range(9)]
    rows.append(RawExample("bad", {"en": "e" * 20, "fr": "f" * 110}))
    corpus = build_corpus(rows, ["en", "fr"])
    assert "bad" not in corpus.ids and len(corpus) == 9
    assert corpus.drops == {"length_ratio": 1}
    assert corpus.drops_by_lang == {"en": {"length_ratio": 1}, "fr": {"length_ratio": 1}}
    kept_all = build_corpus(rows, ["en", "fr"], clean=CleaningConfig(max_length_ratio=None))
    assert len(kept_all) == 10 and kept_all.drops == {}


def test_build_corpus_without_cleaning_keeps_texts_as_read():
    rows = [RawExample("a", {"en": "(1:1) In  the [beginning]", "fr": "-"})]
    corpus = build_corpus(rows, ["en", "fr"], clean=False)
    assert corpus.texts("en") == ["(1:1) In  the [beginning]"] and corpus.texts("fr") == ["-"]
    assert corpus.drops == {}


def test_duplicate_ids_are_an_error_naming_both_places():
    rows = [
        RawExample("a", {"en": "One"}, "f.tsv:2"),
        RawExample("b", {"en": "Two"}, "f.tsv:3"),
        RawExample("a", {"en": "Three"}, "f.tsv:4"),
    ]
    with pytest.raises(
        MlingualityError, match=r"f.tsv: duplicate id 'a' at f.tsv:4 \(first at f.tsv:2\)"
    ):
        build_corpus(rows, ["en"], source="f.tsv")


def test_texts_and_select_langs():
    corpus = make_corpus(3, ("en", "fr", "de"))
    assert corpus.texts("fr") == ["fr text 0", "fr text 1", "fr text 2"]
    assert len(corpus) == 3 and [example.id for example in corpus] == corpus.ids
    two = corpus.select_langs(["de", "en"])
    assert two.langs == ["de", "en"] and two.examples[1].texts == {
        "de": "de text 1",
        "en": "en text 1",
    }
    assert corpus.langs == ["en", "fr", "de"]  # the original is untouched
    with pytest.raises(
        MlingualityError, match="language 'ru' is not in corpus made; available: en, fr, de"
    ):
        corpus.texts("ru")
    with pytest.raises(MlingualityError, match="'ru'"):
        corpus.select_langs(["en", "ru"])


def test_sample_is_deterministic_order_stable_and_seed_dependent():
    corpus = make_corpus(100)
    first, again = corpus.sample(10, seed=3), corpus.sample(10, seed=3)
    assert first.ids == again.ids and len(first) == 10
    positions = [corpus.ids.index(i) for i in first.ids]
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert corpus.sample(10, seed=4).ids != first.ids
    assert corpus.sample(500).ids == corpus.ids
    # Pinned: a change of the sampling algorithm would silently change every experiment.
    assert corpus.sample(5, seed=0).ids == ["x:5", "x:33", "x:49", "x:53", "x:97"]
    with pytest.raises(MlingualityError, match="n must be >= 0"):
        corpus.sample(-1)


def test_take():
    corpus = make_corpus(5)
    assert corpus.take(2).ids == ["x:0", "x:1"] and corpus.take(9).ids == corpus.ids


def test_split_scores_are_pinned():
    # SHA-256 based, so the same on every machine and Python; a change of hash must show here.
    assert split_score("bible:40:5:9") == pytest.approx(0.3167297108643212, abs=1e-15)
    assert split_score("bible:43:3:16") == pytest.approx(0.5440221182410229, abs=1e-15)
    assert split_score("bible:40:5:9", salt="other") == pytest.approx(0.8498740060174212, abs=1e-15)


def test_split_membership_is_pinned():
    ids = ["bible:40:5:9", "bible:1:1:1", "bible:43:3:16", "bible:19:23:1", "x.tsv:2", "x.tsv:4"]
    corpus = ParallelCorpus([ParallelExample(i, {"en": i}) for i in ids], ["en"])
    select, evaluate = corpus.split(0.5)
    assert evaluate.ids == ["bible:40:5:9", "bible:1:1:1", "x.tsv:4"]
    assert select.ids == ["bible:43:3:16", "bible:19:23:1", "x.tsv:2"]


def test_split_is_disjoint_complete_and_near_the_fraction():
    corpus = make_corpus(4000)
    select, evaluate = corpus.split(0.25)
    assert set(select.ids).isdisjoint(evaluate.ids)
    assert sorted(select.ids + evaluate.ids) == sorted(corpus.ids)
    assert abs(len(evaluate) / len(corpus) - 0.25) < 0.03  # binomial sd is 0.007
    # Order is kept within each part.
    assert select.ids == [i for i in corpus.ids if i in set(select.ids)]


def test_split_depends_on_the_id_only():
    corpus = make_corpus(500)
    _, evaluate = corpus.split(0.5)
    _, evaluate_of_sample = corpus.sample(100, seed=1).split(0.5)
    assert set(evaluate_of_sample.ids) <= set(evaluate.ids)
    _, smaller = corpus.split(0.2)
    assert set(smaller.ids) <= set(evaluate.ids)  # nested in the fraction
    _, salted = corpus.split(0.5, salt="another")
    assert salted.ids != evaluate.ids
    with pytest.raises(MlingualityError, match="eval_fraction"):
        corpus.split(1.5)
