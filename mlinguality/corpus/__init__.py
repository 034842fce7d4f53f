"""Stage 2: parallel corpora (the same meaning in several languages).

>>> from mlinguality.corpus import load_corpus
>>> corpus = load_corpus("bible", ["en", "fr"], books="Matthew", limit=3)  # doctest: +SKIP
"""

from mlinguality.corpus.adapters import as_corpus
from mlinguality.corpus.bible import DEFAULT_TRANSLATIONS, TRANSLATIONS, Translation, parse_books
from mlinguality.corpus.cleaning import CleaningConfig, clean_text
from mlinguality.corpus.core import (
    ParallelCorpus,
    ParallelExample,
    RawExample,
    build_corpus,
    split_salt,
    split_score,
)
from mlinguality.corpus.loading import load_corpus, parse_langs

__all__ = [
    "DEFAULT_TRANSLATIONS",
    "TRANSLATIONS",
    "CleaningConfig",
    "ParallelCorpus",
    "ParallelExample",
    "RawExample",
    "Translation",
    "as_corpus",
    "build_corpus",
    "clean_text",
    "load_corpus",
    "parse_books",
    "parse_langs",
    "split_salt",
    "split_score",
]
