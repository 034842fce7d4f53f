"""Your own data as a corpus: dicts, DataFrames, Hugging Face Datasets, duck-typed objects."""

from __future__ import annotations

import logging

import pytest

from mlinguality.corpus import as_corpus, load_corpus
from mlinguality.errors import MlingualityError

TEXTS = {"en": ["One.", "Two words.", "Three."], "fr": ["Un.", "Deux mots.", "Trois."]}


def test_dict_dataframe_and_dataset_give_the_same_corpus():
    pandas = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    from_dict = as_corpus(TEXTS)
    frame = pandas.DataFrame({"id": ["a", "b", "c"], **TEXTS})
    from_frame = as_corpus(frame, ["fr", "en"])
    from_dataset = as_corpus(datasets.Dataset.from_dict(TEXTS))
    translation = datasets.Dataset.from_dict(
        {"translation": [{"en": e, "fr": f} for e, f in zip(*TEXTS.values(), strict=True)]}
    )
    from_pairs = as_corpus(translation)
    assert from_dict.langs == from_dataset.langs == from_pairs.langs == ["en", "fr"]
    assert from_frame.langs == ["fr", "en"] and from_frame.ids == ["a", "b", "c"]
    for corpus in (from_dict, from_frame, from_dataset, from_pairs):
        assert corpus.texts("fr") == TEXTS["fr"] and corpus.texts("en") == TEXTS["en"]
    assert from_dict.ids == ["0", "1", "2"]
    assert as_corpus(from_dict) is from_dict  # already a corpus: unchanged


def test_load_corpus_cleans_in_memory_data_and_samples():
    corpus = load_corpus({"en": ["One.", " ", "Three."], "fr": ["Un.", "Deux.", "Trois."]}, "fr,en")
    assert corpus.langs == ["fr", "en"] and corpus.drops == {"empty": 1}
    assert len(load_corpus(TEXTS, limit=2)) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"en": ["a", "b"], "fr": ["c"]}, "columns differ in length"),
        ({"en": ["a"], "fr": [3]}, "row 0 (fr) is int, not a string"),
        ([("a", "b")], "cannot read a list"),
    ],
)
def test_bad_data_gets_one_line_errors(data, message):
    with pytest.raises(MlingualityError, match=message.replace("(", r"\(").replace(")", r"\)")):
        as_corpus(data)
    with pytest.raises(MlingualityError, match="no column 'de'"):
        as_corpus(TEXTS, ["en", "de"])


def test_collect_takes_a_dict_and_puts_the_model_in_eval_mode(tiny_model, caplog):
    from mlinguality.activations import collect

    corpus = as_corpus(TEXTS)
    expected = collect(tiny_model, corpus, progress=False)
    tiny_model.train()
    with caplog.at_level(logging.WARNING):
        stats = collect(tiny_model, TEXTS, progress=False)
    assert not tiny_model.training
    assert any("training mode" in record.getMessage() for record in caplog.records)
    assert list(stats) == ["en", "fr"]
    for lang in stats:
        assert stats[lang].n_tokens == expected[lang].n_tokens
        assert stats[lang].sum.equal(expected[lang].sum)
