"""Tests for mlinguality/steering/language_id.py (py3langid, offline)."""

from __future__ import annotations

import pytest

from mlinguality.errors import MlingualityError
from mlinguality.steering.language_id import LanguageIdentifier, distinct_n, first_words, outcome

VERSES = {
    "en": "In the beginning God created the heaven and the earth.",
    "fr": "Au commencement, Dieu créa les cieux et la terre.",
    "de": "Im Anfang schuf Gott die Himmel und die Erde.",
    "ru": "В начале сотворил Бог небо и землю.",
    "hi": "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।",
}


@pytest.fixture(scope="module")
def identifier():
    return LanguageIdentifier()


def test_identifies_the_five_languages_offline(identifier):
    assert identifier.identify(list(VERSES.values())) == list(VERSES)
    assert identifier.accuracy({lang: [text] for lang, text in VERSES.items()}) == dict.fromkeys(
        VERSES, 1.0
    )
    assert identifier.accuracy({"en": [VERSES["fr"], VERSES["en"]]}) == {"en": 0.5}
    assert identifier.classify("123 !!") == ("", 0.0)
    assert len(identifier.langs) > 90  # all of py3langid's languages: "other" is possible


def test_restricted_identifier_and_errors():
    restricted = LanguageIdentifier(["en", "fr"])
    assert restricted.identify([VERSES["de"]])[0] in ("en", "fr")
    with pytest.raises(MlingualityError, match="does not know"):
        LanguageIdentifier(["xx"])


def test_outcome_distinct_and_prompts():
    assert [outcome(found, "en", "fr") for found in ("fr", "en", "de", "")] == [
        "target",
        "source",
        "other",
        "other",
    ]
    assert distinct_n([1, 2, 3, 4], 2) == 1.0
    assert distinct_n([7, 7, 7, 7, 7], 2) == 0.25  # 4 bigrams, one distinct
    assert distinct_n([1], 2) == 1.0
    assert distinct_n([1, 1, 2], 1) == pytest.approx(2 / 3)
    assert first_words("  a  b c d ", 2) == "a b"
    with pytest.raises(MlingualityError):
        distinct_n([1, 2], 0)
