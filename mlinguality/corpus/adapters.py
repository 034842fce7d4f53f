"""Your own parallel data as a corpus: a dict of lists, a pandas DataFrame, a HF ``datasets`` Dataset.

:func:`as_corpus` turns any of these into a :class:`~mlinguality.corpus.core.ParallelCorpus`;
:func:`~mlinguality.corpus.loading.load_corpus` and :func:`~mlinguality.activations.collect` call
it, so each accepts them directly. Objects are recognised by what they have (duck typing), so
neither pandas nor ``datasets`` needs to be installed for the rest to work:

- a corpus already (``.ids`` and ``.texts(lang)``): returned unchanged;
- a mapping ``{lang: [text, ...]}`` (one list per language, aligned by position), optionally
  with an ``"id"`` entry;
- a table with ``columns`` (a pandas DataFrame: one column per language, optional ``id``);
- a Hugging Face ``Dataset`` (``column_names``): one column per language, or the usual
  translation layout, a single ``translation`` column of ``{lang: text}`` dicts.

>>> corpus = as_corpus({"en": ["One.", "Two."], "fr": ["Un.", "Deux."]})
>>> corpus.langs, corpus.ids, corpus.texts("fr")
(['en', 'fr'], ['0', '1'], ['Un.', 'Deux.'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlinguality.corpus.cleaning import CleaningConfig
from mlinguality.corpus.core import RawExample, build_corpus
from mlinguality.errors import MlingualityError

ID_COLUMN = "id"
TRANSLATION_COLUMN = "translation"  # Hugging Face translation datasets (wmt, opus, ...)


def is_corpus(data: Any) -> bool:
    """Whether ``data`` already behaves like a corpus (``.ids`` and ``.texts(lang)``)."""
    return hasattr(data, "ids") and callable(getattr(data, "texts", None))


def _columns(data: Any) -> dict[str, list[Any]]:
    """Column name -> list of values for a mapping, a DataFrame or a ``datasets.Dataset``."""
    if isinstance(data, Mapping):
        return {str(key): list(values) for key, values in data.items()}
    if hasattr(data, "column_names"):  # datasets.Dataset: dataset[column] is the column
        return {str(name): list(data[name]) for name in data.column_names}
    if hasattr(data, "columns") and hasattr(data, "to_dict"):  # pandas.DataFrame
        return {str(name): data[name].tolist() for name in data.columns}
    raise MlingualityError(
        f"corpus: cannot read a {type(data).__name__}; pass a ParallelCorpus, a dict of "
        "{lang: [texts]}, a pandas DataFrame or a datasets.Dataset"
    )


def as_corpus(
    data: Any,
    langs: Sequence[str] | None = None,
    *,
    clean: bool | CleaningConfig = False,
    source: str = "",
) -> Any:
    """Any supported parallel data as a corpus (see the module docstring for the formats).

    Args:
        data: A corpus, a ``{lang: [texts]}`` mapping, a DataFrame or a ``datasets.Dataset``.
        langs: Languages to keep, in order (default: every language column, in column order).
        clean: Apply :mod:`~mlinguality.corpus.cleaning` (``True`` or a config) or keep the texts
            as given (``False``, the default here: your data is yours).
        source: A name for messages and reports.

    Returns:
        A :class:`~mlinguality.corpus.core.ParallelCorpus` (or ``data`` itself when it already
        behaves like a corpus and ``langs`` is not given).

    Raises:
        MlingualityError: Unknown type, missing language, columns of different lengths, or a
            text that is not a string.
    """
    if is_corpus(data):
        if langs is None or list(langs) == list(getattr(data, "langs", [])):
            return data
        return data.select_langs(list(langs))
    columns = _columns(data)
    if set(columns) <= {TRANSLATION_COLUMN, ID_COLUMN} and TRANSLATION_COLUMN in columns:
        pairs = columns[TRANSLATION_COLUMN]
        found = list(pairs[0]) if pairs else []
        columns = {
            **({ID_COLUMN: columns[ID_COLUMN]} if ID_COLUMN in columns else {}),
            **{lang: [pair[lang] for pair in pairs] for lang in found},
        }
    available = [name for name in columns if name != ID_COLUMN]
    langs = list(langs) if langs is not None else available
    for lang in langs:
        if lang not in columns:
            raise MlingualityError(
                f"corpus{' ' + source if source else ''}: no column {lang!r}; "
                f"columns: {', '.join(columns)}"
            )
    lengths = {name: len(columns[name]) for name in [*langs, ID_COLUMN] if name in columns}
    if len(set(lengths.values())) > 1:
        raise MlingualityError(f"corpus: columns differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    ids = [str(i) for i in columns.get(ID_COLUMN, range(n))]
    rows = []
    for index, example_id in enumerate(ids):
        texts = {}
        for lang in langs:
            text = columns[lang][index]
            if not isinstance(text, str):
                raise MlingualityError(
                    f"corpus: row {index} ({lang}) is {type(text).__name__}, not a string"
                )
            texts[lang] = text
        rows.append(RawExample(example_id, texts, where=f"row {index}"))
    return build_corpus(rows, langs, clean=clean, source=source or type(data).__name__)
