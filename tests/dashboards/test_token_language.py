"""The token-language table against counts done by hand."""

from __future__ import annotations

from collections import Counter

from mlinguality.dashboards.token_language import token_languages
from mlinguality.model import TinyModelConfig, build_tiny_tokenizer


def test_assignment_follows_the_margin_and_the_minimum_count():
    tokenizer = build_tiny_tokenizer(TinyModelConfig())
    texts = {"en": [" the the the the and"], "fr": [" le le le le and the"]}
    table = token_languages(tokenizer, texts, margin=0.8, min_count=3)
    counts = {
        lang: Counter(
            t for text in lang_texts for t in tokenizer(text, add_special_tokens=False)["input_ids"]
        )
        for lang, lang_texts in texts.items()
    }
    for token_id in set(counts["en"]) | set(counts["fr"]):
        en, fr = counts["en"][token_id], counts["fr"][token_id]
        total = en + fr
        expected = None
        if total >= 3 and max(en, fr) >= 0.8 * total:
            expected = "en" if en >= fr else "fr"
        assert table.language_of(token_id) == expected, tokenizer.decode([token_id])
        assert table.counts[:, token_id].tolist() == [en, fr]
    assert table.sizes()["en"] >= 1 and table.sizes()["fr"] >= 1


def test_special_tokens_are_never_counted():
    tokenizer = build_tiny_tokenizer(TinyModelConfig())
    table = token_languages(tokenizer, {"en": ["a b c"], "fr": ["d e f"]})
    assert int(table.counts[:, tokenizer.bos_token_id].sum()) == 0
