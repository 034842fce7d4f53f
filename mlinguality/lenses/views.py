"""The three residual-stream views at once, from collected statistics or from a model and a
corpus: what the ``lenses`` stage writes, callable without a run folder.

>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig(n_layers=4, d_mlp=64))
>>> verses = {
...     "en": ["In the beginning God created the heaven", "Blessed are the peacemakers",
...            "And the light was good", "The children of God"],
...     "fr": ["Au commencement Dieu créa les cieux", "Heureux ceux qui procurent la paix",
...            "Et la lumière était bonne", "Les fils de Dieu"],
... }
>>> views = residual_views(model, verses, n_boot=10)
>>> sorted(views.lens["lang"].unique()), list(views.probes["layer"])
(['en', 'fr'], [0, 1, 2, 3])
>>> sorted(set(views.similarity.layers["pair"]))
['en-fr']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from mlinguality.errors import MlingualityError
from mlinguality.lenses.logit_lens import logit_lens_languages
from mlinguality.lenses.probes import language_probe
from mlinguality.lenses.similarity import SimilarityProfile, similarity_profile

__all__ = ["LayerViews", "cross_validated_probe", "example_folds", "layer_views", "residual_views"]


@dataclass
class LayerViews:
    """The residual stream seen three ways, per layer.

    Attributes:
        lens: :func:`~mlinguality.lenses.logit_lens.logit_lens` rows of every language.
        probes: The language-ID probe, the mean over the cross-validation folds.
        probes_by_fold: The probe's rows of each fold (column ``fold``).
        similarity: CKA and retrieval of every pair and the floor, with U.
    """

    lens: pd.DataFrame
    probes: pd.DataFrame
    probes_by_fold: pd.DataFrame
    similarity: SimilarityProfile


def example_folds(n_examples: int, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint sorted sets of example indices covering ``range(n_examples)``.

    >>> [len(f) for f in example_folds(7, 2, 0)]
    [4, 3]
    """
    if n_examples < folds:
        raise MlingualityError(
            f"lenses.folds: {folds} folds need at least {folds} examples, got {n_examples}"
        )
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed))
    return [order[index::folds].sort().values for index in range(folds)]


def cross_validated_probe(
    means: Mapping[str, torch.Tensor], folds: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`~mlinguality.lenses.probes.language_probe` in ``folds`` folds grouped by example
    (a verse's translations are never split between training and test): the folds' mean
    (``compression`` recomputed from the mean code lengths) and the per-fold rows."""
    n_examples = next(iter(means.values())).shape[0]
    parts = example_folds(n_examples, folds, seed)
    frames = []
    for fold, test in enumerate(parts):
        train = torch.cat([part for index, part in enumerate(parts) if index != fold]).sort().values
        frame = language_probe(
            {lang: m[train] for lang, m in means.items()},
            {lang: m[test] for lang, m in means.items()},
            seed=seed + fold,
        )
        frames.append(frame.assign(fold=fold))
    by_fold = pd.concat(frames, ignore_index=True)
    mean = by_fold.drop(columns="fold").groupby("layer", as_index=False).mean()
    mean["compression"] = mean["uniform_bits"] / mean["codelength_bits"]
    return mean, by_fold


def layer_views(
    model,
    stats: Mapping,
    langs: Sequence[str],
    token_table,
    *,
    pairs: Sequence[tuple[str, str]],
    floor_pairs: Sequence[tuple[str, str]] = (),
    folds: int = 2,
    n_boot: int = 200,
    seed: int = 0,
    english: str = "en",
) -> LayerViews:
    """The three views from ``{lang: ActivationStats}`` collected with ``residual=True``.

    Args:
        model: The TransformerBridge the statistics come from (its final norm and unembedding
            decode the lens).
        stats: Statistics of ``langs`` and of the floor pairs' languages.
        langs: The languages of the lens and the probe.
        token_table: Each token's language (:func:`~mlinguality.dashboards.token_language.
            token_languages`, or ``{token_id: lang}``).
        pairs: Language pairs of the similarity profile.
        floor_pairs: Same-language pairs (two translations into one language).
        folds: The probe's cross-validation folds.
        n_boot: Bootstrap resamples of the examples (similarity).
        seed: Seeds the folds, the probe's control and the bootstrap.
        english: The language counted as English by the lens.
    """
    needed = dict.fromkeys([*langs, *(lang for pair in [*pairs, *floor_pairs] for lang in pair)])
    missing = [
        lang for lang in needed if lang not in stats or stats[lang].example_resid_mean is None
    ]
    if missing:
        raise MlingualityError(
            f"lenses: the statistics of {', '.join(missing)} hold no residuals (collect with "
            "residual=True; in a run, lenses.enabled=true)"
        )
    samples = {
        lang: (stats[lang].lens_resid, stats[lang].lens_next)
        for lang in langs
        if stats[lang].lens_next is not None and stats[lang].lens_next.numel()
    }
    lens = logit_lens_languages(model, samples, token_table, english=english)
    probes, by_fold = cross_validated_probe(
        {lang: stats[lang].example_resid_mean for lang in langs}, folds, seed
    )
    similarity = similarity_profile(
        {lang: stats[lang].example_resid_mean for lang in needed},
        list(pairs),
        list(floor_pairs),
        n_boot=n_boot,
        seed=seed,
    )
    return LayerViews(lens, probes, by_fold, similarity)


def residual_views(
    model,
    corpus,
    langs: Sequence[str] | None = None,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    floor_pairs: Sequence[tuple[str, str]] = (),
    lens_positions: int = 256,
    folds: int = 2,
    n_boot: int = 200,
    seed: int = 0,
    english: str = "en",
    positions: str = "all",
    batch_tokens: int = 4096,
) -> LayerViews:
    """Collect the residuals of ``corpus`` (one pass, :func:`~mlinguality.activations.collect.
    collect` with ``residual=True``) and compute the three views.

    Args:
        model: A TransformerBridge.
        corpus: A parallel corpus, a ``{lang: [texts]}`` dict, a DataFrame or a
            ``datasets.Dataset`` (:func:`mlinguality.corpus.as_corpus`).
        langs: Languages of the lens and the probe (default: the corpus's, less the floor
            pairs' second languages).
        pairs: Similarity pairs (default: the first language against each other).
        floor_pairs: Same-language pairs, e.g. ``[("en", "en:WEB")]``.
        lens_positions: Positions per language the lens decodes (a seeded sample).
        folds, n_boot, seed, english: As in :func:`layer_views`.
        positions: Collection's counted positions (``"all"``, ``"word_final"``; ``"last"``
            leaves the lens no position with a next token).
        batch_tokens: Padded tokens per forward batch.
    """
    from mlinguality.activations.collect import collect
    from mlinguality.corpus import as_corpus
    from mlinguality.dashboards.token_language import token_languages

    corpus = as_corpus(corpus)
    floors = [tuple(pair) for pair in floor_pairs]
    controls = {pair[1] for pair in floors}
    langs = (
        list(langs)
        if langs is not None
        else [lang for lang in corpus.langs if lang not in controls]
    )
    pairs = list(pairs) if pairs is not None else [(langs[0], other) for other in langs[1:]]
    every = list(dict.fromkeys([*langs, *(lang for pair in [*pairs, *floors] for lang in pair)]))
    stats = collect(
        model,
        corpus,
        every,
        positions=positions,
        per_example=True,
        batch_tokens=batch_tokens,
        residual=True,
        lens_positions=lens_positions,
        lens_seed=seed,
        progress=False,
    )
    table = token_languages(
        model.tokenizer, {lang: corpus.texts(lang) for lang in langs}, vocab_size=model.cfg.d_vocab
    )
    return layer_views(
        model, stats, langs, table, pairs=pairs, floor_pairs=floors, folds=folds,
        n_boot=n_boot, seed=seed, english=english,
    )  # fmt: skip
