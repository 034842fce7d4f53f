"""Stage 6c: what language did the model write, and is the text any good: an offline identifier
(py3langid, its model bundled in the wheel), identifier accuracy, the Language Confusion
Benchmark's line-level pass (Marchisio et al. 2024), and repetition.

>>> identifier = LanguageIdentifier()
>>> identifier.identify(["Au commencement, Dieu créa les cieux et la terre.", "  "])
['fr', '']
>>> outcome("fr", source="en", target="fr"), outcome("de", source="en", target="fr")
('target', 'other')
>>> distinct_n([5, 6, 5, 6, 5], n=2)  # bigrams (5,6) (6,5) (5,6) (6,5): 2 distinct of 4
0.5
>>> line_pass(["fr", "fr"], target="fr"), line_pass(["fr", "en"], target="fr"), line_pass([], "fr")
(True, False, False)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)

OUTCOMES = ("target", "source", "other")
# A line with fewer letters than this is not judged on its own (a list marker, a number, one
# short word: too little for a character n-gram identifier); see line_languages.
LINE_MIN_LETTERS = 10


class LanguageIdentifier:
    """py3langid's naive Bayes identifier (97 languages; the ISO 639-1 codes the corpus uses).

    Args:
        langs: Restrict the answers to these languages (``None``: all 97, so a generation in
            neither the source nor the target language shows up as "other").
    """

    def __init__(self, langs: Sequence[str] | None = None) -> None:
        try:
            from py3langid.langid import MODEL_FILE
            from py3langid.langid import LanguageIdentifier as _Identifier
        except ImportError:
            raise MlingualityError(
                "language identification needs py3langid (pip install py3langid)"
            ) from None
        self._model = _Identifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.langs = list(self._model.nb_classes) if langs is None else list(langs)
        unknown = [lang for lang in self.langs if lang not in self._model.nb_classes]
        if unknown:
            raise MlingualityError(f"py3langid does not know language {unknown[0]!r}")
        if langs is not None:
            self._model.set_languages(self.langs)

    def identify(self, texts: Sequence[str]) -> list[str]:
        """The most probable language of each text; ``""`` for a text without letters."""
        return [self.classify(text)[0] for text in texts]

    def classify(self, text: str) -> tuple[str, float]:
        """``(language, probability)``; ``("", 0.0)`` for a text without letters."""
        if not any(char.isalpha() for char in text):
            return "", 0.0
        lang, probability = self._model.classify(text)
        return str(lang), float(probability)

    def accuracy(self, texts_by_lang: Mapping[str, Sequence[str]]) -> dict[str, float]:
        """Share of each language's texts identified as that language."""
        return {
            lang: sum(found == lang for found in self.identify(texts)) / max(len(texts), 1)
            for lang, texts in texts_by_lang.items()
        }


def outcome(found: str, source: str, target: str) -> str:
    """``"target"``, ``"source"`` or ``"other"`` (anything else, including no language)."""
    if found == target:
        return "target"
    if found == source:
        return "source"
    return "other"


def distinct_n(ids: Sequence[int], n: int = 2) -> float:
    """Distinct n-grams / n-grams of one token sequence (Li et al. 2016); 1.0 when shorter than n.

    1 - distinct_n is the repetition rate: a generation stuck in a loop scores near 0.
    """
    if n < 1:
        raise MlingualityError(f"distinct_n: n must be >= 1, got {n}")
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def response_lines(text: str) -> list[str]:
    """The lines of a response: split at line breaks (``str.splitlines``), stripped, blank
    lines dropped.

    >>> response_lines("Au commencement\\n\\n  Dieu créa  \\r\\n")
    ['Au commencement', 'Dieu créa']
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def line_languages(
    identifier: LanguageIdentifier, text: str, min_letters: int = LINE_MIN_LETTERS
) -> list[str]:
    """The identified language of each judged line of ``text`` (Language Confusion Benchmark,
    Marchisio et al. 2024, line level).

    Lines come from :func:`response_lines`. A line with fewer than ``min_letters`` letters
    (``str.isalpha``) is not judged on its own: it neither passes nor fails a response. When no
    line is long enough but the response has letters, the whole response is judged as one line
    (so a short one-line response is judged exactly as :meth:`LanguageIdentifier.classify`
    judges it). A response without letters has no judged line (and so does not pass).
    """
    lines = response_lines(text)
    judged = [line for line in lines if sum(c.isalpha() for c in line) >= min_letters]
    if not judged and any(c.isalpha() for c in text):
        judged = [" ".join(lines)]
    return [identifier.classify(line)[0] for line in judged]


def line_pass(line_langs: Sequence[str], target: str) -> bool:
    """LCB's line-level pass: every judged line is in ``target`` (and there is at least one).

    The line-level pass rate of a set of responses is the mean of this over them.
    """
    return bool(line_langs) and all(lang == target for lang in line_langs)


def first_words(text: str, n_words: int) -> str:
    """The first ``n_words`` whitespace words of ``text`` (a prompt cut from a corpus example).

    >>> first_words("In the beginning God created the heaven", 3)
    'In the beginning'
    """
    return " ".join(text.split()[:n_words])


__all__ = [
    "LINE_MIN_LETTERS",
    "OUTCOMES",
    "LanguageIdentifier",
    "distinct_n",
    "first_words",
    "line_languages",
    "line_pass",
    "outcome",
    "response_lines",
]
