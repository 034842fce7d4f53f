"""The parallel corpus: aligned examples, deterministic sampling and id-hashed splits.

A :class:`ParallelCorpus` is built from raw rows by :func:`build_corpus`, which cleans every text
(:mod:`mlinguality.corpus.cleaning`), drops examples that lost a language or whose lengths
disagree, and counts every drop by reason.

>>> corpus = build_corpus(
...     [RawExample("a", {"en": "One.", "fr": "Un."}), RawExample("b", {"en": "Two.", "fr": " "})],
...     ["en", "fr"],
... )
>>> corpus.ids, corpus.texts("fr"), corpus.drops
(['a'], ['Un.'], {'empty': 1})
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from mlinguality.corpus.cleaning import (
    EDITORIAL,
    EMPTY,
    LENGTH_RATIO,
    CleaningConfig,
    clean_reason,
    length_ratio_outliers,
)
from mlinguality.errors import MlingualityError

# Precedence when one example has several problems: it is counted once, under the first.
DROP_REASONS = (EDITORIAL, EMPTY, LENGTH_RATIO)


@dataclass(frozen=True)
class ParallelExample:
    """One meaning in several languages.

    Attributes:
        id: Stable id, e.g. ``"bible:40:5:9"`` for Matthew 5:9 or ``"name.tsv:12"``.
        texts: ISO 639-1 code -> cleaned text (NFC).
    """

    id: str
    texts: dict[str, str]


@dataclass(frozen=True)
class RawExample:
    """A row as a reader found it, before cleaning; ``where`` names its file and line."""

    id: str
    texts: dict[str, str]
    where: str = ""


@dataclass
class ParallelCorpus:
    """Aligned examples: every example has a text in every language of ``langs``.

    Attributes:
        examples: The examples, in source order.
        langs: Language codes, in the order asked for.
        drops: Examples dropped while building, by reason (``empty``, ``editorial``,
            ``length_ratio``); each dropped example counts once.
        drops_by_lang: Per language, the dropped examples that language's text caused (or, for
            ``length_ratio``, took part in), by reason.
        source: What the corpus was read from (for messages and reports).
        translations: For the Bible, language -> translation name.
    """

    examples: list[ParallelExample]
    langs: list[str]
    drops: dict[str, int] = field(default_factory=dict)
    drops_by_lang: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = ""
    translations: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[ParallelExample]:
        return iter(self.examples)

    @property
    def ids(self) -> list[str]:
        """Example ids, in corpus order."""
        return [example.id for example in self.examples]

    def _check_lang(self, lang: str) -> None:
        if lang not in self.langs:
            raise MlingualityError(
                f"language {lang!r} is not in corpus {self.source or '(unnamed)'}; "
                f"available: {', '.join(self.langs)}"
            )

    def texts(self, lang: str) -> list[str]:
        """The texts of one language, aligned with :attr:`ids`."""
        self._check_lang(lang)
        return [example.texts[lang] for example in self.examples]

    def _with(self, examples: list[ParallelExample]) -> ParallelCorpus:
        return replace(self, examples=examples)

    def select_langs(self, langs: Sequence[str]) -> ParallelCorpus:
        """The same examples restricted to ``langs`` (drop counts are kept as they were)."""
        if not langs:
            raise MlingualityError("select_langs: no languages given")
        for lang in langs:
            self._check_lang(lang)
        examples = [
            ParallelExample(example.id, {lang: example.texts[lang] for lang in langs})
            for example in self.examples
        ]
        return replace(
            self,
            examples=examples,
            langs=list(langs),
            drops_by_lang={lang: self.drops_by_lang.get(lang, {}) for lang in langs},
            translations={k: v for k, v in self.translations.items() if k in langs},
        )

    def sample(self, n: int, seed: int = 0) -> ParallelCorpus:
        """``n`` examples drawn without replacement (all if ``n >= len``), kept in corpus order.

        The draw depends only on ``n``, ``seed`` and the corpus length, so it is the same on every
        machine and Python version.
        """
        if n < 0:
            raise MlingualityError(f"sample: n must be >= 0, got {n}")
        if n >= len(self):
            return self._with(list(self.examples))
        chosen = sorted(random.Random(seed).sample(range(len(self)), n))
        return self._with([self.examples[i] for i in chosen])

    def subset(self, indices: Sequence[int]) -> ParallelCorpus:
        """The examples at ``indices``, in that order (a shard of a collection, say)."""
        return self._with([self.examples[index] for index in indices])

    def take(self, n: int) -> ParallelCorpus:
        """The first ``n`` examples."""
        if n < 0:
            raise MlingualityError(f"take: n must be >= 0, got {n}")
        return self._with(self.examples[:n])

    def split(
        self, eval_fraction: float = 0.5, salt: str = "mlinguality"
    ) -> tuple[ParallelCorpus, ParallelCorpus]:
        """Split into ``(select, eval)`` by a hash of each id.

        An example goes to ``eval`` when ``split_score(id, salt) < eval_fraction``. Membership
        depends on the id and salt alone: the two parts are disjoint, the same on every run and
        machine, and an example keeps its side when the corpus is sampled or grows.
        """
        if not 0.0 <= eval_fraction <= 1.0:
            raise MlingualityError(f"split: eval_fraction must be in [0, 1], got {eval_fraction}")
        held_out = [split_score(example.id, salt) < eval_fraction for example in self.examples]
        select = [example for example, out in zip(self.examples, held_out, strict=True) if not out]
        evaluate = [example for example, out in zip(self.examples, held_out, strict=True) if out]
        return self._with(select), self._with(evaluate)


def split_salt(seed: int = 0) -> str:
    """The :meth:`ParallelCorpus.split` salt of a run's ``corpus.seed``: seed 0 keeps the
    original salt (the published splits), any other seed gives another split.

    >>> split_salt(0), split_salt(3)
    ('mlinguality', 'mlinguality:3')
    """
    return "mlinguality" if seed == 0 else f"mlinguality:{seed}"


def split_score(example_id: str, salt: str = "mlinguality") -> float:
    """A uniform number in [0, 1) from SHA-256 of ``salt`` and ``id`` (stable everywhere).

    >>> round(split_score("bible:40:5:9"), 6)
    0.31673
    """
    digest = hashlib.sha256(f"{salt}\x1f{example_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_unique_ids(rows: Sequence[RawExample], source: str) -> None:
    """Raise MlingualityError naming the first duplicated id and both places it occurs."""
    seen: dict[str, str] = {}
    for row in rows:
        if row.id in seen:
            raise MlingualityError(
                f"{source}: duplicate id {row.id!r} at {row.where or '?'} "
                f"(first at {seen[row.id] or '?'})"
            )
        seen[row.id] = row.where


def build_corpus(
    rows: Sequence[RawExample],
    langs: Sequence[str],
    *,
    clean: bool | CleaningConfig = True,
    source: str = "",
    translations: dict[str, str] | None = None,
) -> ParallelCorpus:
    """Clean raw rows into a corpus, dropping and counting the examples that cannot be used.

    Args:
        rows: Raw examples holding a text for every language in ``langs``.
        langs: Languages to keep, in order.
        clean: ``True`` for the default :class:`CleaningConfig`, a config, or ``False`` to keep
            the texts as read (NFC only) and drop nothing.
        source: Name of the source, for messages.
        translations: Language -> translation name, recorded on the corpus.

    Returns:
        The corpus, with ``drops`` and ``drops_by_lang`` filled in.
    """
    check_unique_ids(rows, source)
    langs = list(langs)
    if clean is False:
        examples = [
            ParallelExample(row.id, {lang: _nfc(row.texts[lang]) for lang in langs}) for row in rows
        ]
        return ParallelCorpus(examples, langs, source=source, translations=translations or {})
    config = clean if isinstance(clean, CleaningConfig) else CleaningConfig()
    drops: Counter[str] = Counter()
    by_lang: dict[str, Counter[str]] = {lang: Counter() for lang in langs}
    kept: list[ParallelExample] = []
    for row in rows:
        texts, reasons = {}, {}
        for lang in langs:
            texts[lang], reason = clean_reason(row.texts[lang], config)
            if reason is not None:
                reasons[lang] = reason
                by_lang[lang][reason] += 1
        if reasons:
            drops[min(reasons.values(), key=DROP_REASONS.index)] += 1
        else:
            kept.append(ParallelExample(row.id, texts))
    if config.max_length_ratio is not None and len(langs) > 1 and kept:
        lengths = {lang: [len(example.texts[lang]) for example in kept] for lang in langs}
        blamed = length_ratio_outliers(lengths, config.max_length_ratio)
        for culprits in blamed:
            for lang in culprits:
                by_lang[lang][LENGTH_RATIO] += 1
        drops[LENGTH_RATIO] += sum(bool(culprits) for culprits in blamed)
        kept = [example for example, culprits in zip(kept, blamed, strict=True) if not culprits]
    return ParallelCorpus(
        kept,
        langs,
        drops={reason: drops[reason] for reason in DROP_REASONS if drops[reason]},
        drops_by_lang={lang: dict(counts) for lang, counts in by_lang.items()},
        source=source,
        translations=translations or {},
    )


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
