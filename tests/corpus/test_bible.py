"""The Bible reader: book ranges, translation choice, and a short real read (the book of Jude)."""

from __future__ import annotations

import pytest

from mlinguality.corpus import DEFAULT_TRANSLATIONS, TRANSLATIONS, load_corpus, parse_books
from mlinguality.corpus.bible import read_bible, resolve_translations
from mlinguality.errors import MlingualityError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, (1, 66)),
        ("all", (1, 66)),
        ("OT", (1, 39)),
        ("nt", (40, 66)),
        ("Matthew", (40, 40)),
        ("matt", (40, 40)),
        ("1 Samuel", (9, 9)),
        ("40-43", (40, 43)),
        ("Matthew-John", (40, 43)),
        ("1Samuel-2Kings", (9, 12)),
        ("Song of Solomon", (22, 22)),
        ("Psalm", (19, 19)),
        ("Revelation", (66, 66)),
    ],
)
def test_parse_books(spec, expected):
    assert parse_books(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Foo", "no book 'Foo'"),
        ("Matthew-Foo", "no book 'Foo'"),
        ("67", "no book '67'"),
        ("John-Matthew", r"runs backwards \(John is book 43, Matthew is book 40\)"),
    ],
)
def test_parse_books_errors(spec, message):
    with pytest.raises(MlingualityError, match=message):
        parse_books(spec)


def test_every_language_has_a_default_of_that_language():
    assert {t.lang for t in TRANSLATIONS.values()} == set(DEFAULT_TRANSLATIONS)
    for lang, code in DEFAULT_TRANSLATIONS.items():
        assert TRANSLATIONS[code].lang == lang
    # Public-domain defaults where the database offers one.
    assert {
        lang: TRANSLATIONS[DEFAULT_TRANSLATIONS[lang]].name
        for lang in ("en", "fr", "es", "ru", "it")
    } == {
        "en": "KJV",
        "fr": "LSG",
        "es": "RV1909",
        "ru": "SYN",
        "it": "DIO",
    }


def test_resolve_translations_by_code_or_name_and_errors():
    resolved = resolve_translations(["en", "de"], {"en": "web", "de": "s"})
    assert (resolved["en"].code, resolved["de"].name) == ("4", "SCH")
    with pytest.raises(
        MlingualityError, match=r"'r' for 'en' is ru, not en; choose one of k \(KJV\)"
    ):
        resolve_translations(["en"], {"en": "r"})
    with pytest.raises(MlingualityError, match="'nope' for 'en' is unknown"):
        resolve_translations(["en"], {"en": "nope"})
    with pytest.raises(MlingualityError, match="'fr' is not among the requested en"):
        resolve_translations(["en"], {"fr": "l"})
    with pytest.raises(MlingualityError, match=r"no language 'xx'; available: ar, bn, de, en"):
        resolve_translations(["en", "xx"])


def test_read_jude_aligned_in_canonical_order():
    rows, resolved = read_bible(["en", "fr"], books="Jude")
    assert [row.id for row in rows] == [f"bible:65:1:{v}" for v in range(1, 26)]
    assert rows[0].where == "Jude 1:1" and resolved["fr"].name == "LSG"
    assert rows[0].texts["en"].startswith("Jude, the servant of Jesus Christ, and brother of James")
    assert rows[0].texts["fr"].startswith("Jude, serviteur de Jésus Christ, et frère de Jacques")


def test_load_corpus_bible_with_a_chosen_translation():
    corpus = load_corpus("bible", ["en", "de"], books="Jude", translations={"en": "WEB"})
    assert len(corpus) == 25
    assert corpus.translations["en"].startswith("WEB") and corpus.translations["de"].startswith(
        "ELB"
    )
    assert corpus.texts("en")[24].startswith("to God our Savior, who alone is wise")


def test_two_translations_of_one_language_load_side_by_side():
    corpus = load_corpus("bible", ["en", "en:WEB", "fr", "fr:OST"], books="Jude")
    assert corpus.langs == ["en", "en:WEB", "fr", "fr:OST"]
    assert corpus.translations["en"].startswith("KJV")
    assert corpus.translations["en:WEB"].startswith("WEB")
    assert corpus.translations["fr:OST"].startswith("OST")
    web = load_corpus("bible", ["en", "fr"], books="Jude", translations={"en": "WEB"})
    kjv = load_corpus("bible", ["en", "fr"], books="Jude")
    assert corpus.ids == kjv.ids == web.ids
    assert corpus.texts("en:WEB") == web.texts("en")
    assert corpus.texts("en") == kjv.texts("en") != corpus.texts("en:WEB")
    with pytest.raises(MlingualityError, match="'r' for 'en:r' is ru, not en"):
        load_corpus("bible", ["en", "en:r"], books="Jude")
    with pytest.raises(MlingualityError, match="not an ISO 639-1 code"):
        load_corpus("bible", ["en", "en:"], books="Jude")
