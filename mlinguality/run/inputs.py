"""The inputs of a run's stages: the model and the corpus splits, loaded on first use, and the
:class:`StageContext` every stage step receives.

Texts longer than the model's context are refused with the example's id, or truncated to the
context with a warning, as ``corpus.too_long`` says.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig

logger = logging.getLogger(__name__)


class RunInputs:
    """The model and corpus splits, loaded on first use (a fully reused run loads neither).

    Args:
        config: The run's configuration.
        model: A model already loaded (else ``config.model.spec`` is loaded on first use).
        team: Under torchrun, this rank's :class:`~mlinguality.run.team.Team`.
    """

    def __init__(self, config: RunConfig, model=None, team=None) -> None:
        self.config = config
        self._model = model
        self._splits = None
        self.team = team

    @property
    def model(self):
        if self._model is None:
            self._model = _load_model(self.config)
        return self._model

    @property
    def splits(self):
        if self._splits is None:
            from mlinguality.corpus import load_corpus, split_salt

            corpus_cfg = self.config.corpus
            corpus = load_corpus(
                corpus_cfg.source,
                self.config.collection_langs,  # corpus.langs and the same-language controls
                books=corpus_cfg.books,
                limit=corpus_cfg.limit,
                seed=corpus_cfg.seed,
                translations=corpus_cfg.translations,
                tsv_quoting=corpus_cfg.tsv_quoting,
            )
            corpus = fit_context(corpus, self.model, corpus_cfg.too_long)
            select, evaluate = corpus.split(corpus_cfg.eval_fraction, split_salt(corpus_cfg.seed))
            if len(select) < 2 or len(evaluate) < 1:
                raise MlingualityError(_too_few(corpus_cfg, corpus, len(select), len(evaluate)))
            self._splits = (corpus, select, evaluate)
        return self._splits


@dataclass
class StageContext:
    """What a stage step gets: the config, the inputs, the run folder and (collect only) where
    its checkpoints go."""

    config: RunConfig
    inputs: RunInputs
    run_dir: Path
    checkpoints: Path | None = None


def _too_few(corpus_cfg, corpus, n_select: int, n_eval: int) -> str:
    """Why a corpus cannot be split, with advice that fits the cause: too few usable examples
    (rows dropped, a low corpus.limit, a small file), or enough of them on one side of the hash."""
    head = (
        f"corpus {corpus_cfg.source}: {len(corpus)} usable examples in "
        f"{','.join(corpus_cfg.langs)} split into {n_select} to select and {n_eval} to evaluate"
    )
    limit = corpus_cfg.limit
    if len(corpus) < 3 and corpus.drops:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(corpus.drops.items()))
        worst = {
            lang: sum(counts.values()) for lang, counts in corpus.drops_by_lang.items() if counts
        }
        langs = ", ".join(f"{lang} {n}" for lang, n in sorted(worst.items()))
        return (
            f"{head}; dropped {reasons} (by language: {langs}): every language needs a "
            "non-empty text in each row (check the columns of corpus.langs)"
        )
    if len(corpus) < 3:
        if limit is not None:
            return f"{head}; raise corpus.limit (now {limit})"
        return f"{head}; the corpus needs at least 3 aligned examples"
    more = "add examples" if limit is None else f"raise corpus.limit (now {limit})"
    return (
        f"{head} by the hash of each example's id (corpus.eval_fraction="
        f"{corpus_cfg.eval_fraction}, corpus.seed={corpus_cfg.seed}); a run needs at least 2 "
        f"to select and 1 to evaluate: try another corpus.seed, change corpus.eval_fraction "
        f"or {more}"
    )


def _load_model(config: RunConfig):
    from mlinguality.model import load_model, tiny_config

    spec: Any = tiny_config(config.model.spec, seed=config.seed) or config.model.spec
    return load_model(spec, device=config.model.device, dtype=config.model.dtype)


def fit_context(corpus, model, policy: str):
    """``corpus`` with every text within the model's context (``model.cfg.n_ctx`` tokens).

    Args:
        corpus: The ParallelCorpus.
        model: The model (its tokenizer counts the tokens, BOS included).
        policy: ``"error"``: refuse the first text too long, naming its example and language;
            ``"truncate"``: cut such texts at the last token that fits, with one warning.
    """
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
    if n_ctx <= 0:
        return corpus
    tokenizer = model.tokenizer
    examples, cut = [], []
    for example in corpus.examples:
        texts = dict(example.texts)
        for lang, text in example.texts.items():
            encoded = tokenizer(text, return_offsets_mapping=True)
            if len(encoded["input_ids"]) <= n_ctx:
                continue
            if policy != "truncate":
                raise MlingualityError(
                    f"corpus {corpus.source}: example {example.id!r} ({lang}) has "
                    f"{len(encoded['input_ids'])} tokens, more than the model's context of "
                    f"{n_ctx}; shorten it, or set corpus.too_long=truncate"
                )
            texts[lang] = _truncate(text, encoded, tokenizer, n_ctx)
            cut.append(f"{example.id} ({lang})")
        examples.append(
            dataclasses.replace(example, texts=texts) if texts != example.texts else example
        )
    if cut:
        logger.warning(
            "truncated %d text(s) to the model's context of %d tokens (corpus.too_long=truncate): %s",
            len(cut),
            n_ctx,
            ", ".join(cut[:5]) + (", ..." if len(cut) > 5 else ""),
        )
        return dataclasses.replace(corpus, examples=examples)
    return corpus


def _truncate(text: str, encoded: Any, tokenizer, n_ctx: int) -> str:
    """The longest prefix of ``text`` (cut at a token boundary) that encodes to <= n_ctx tokens."""
    offsets = [end for start, end in encoded["offset_mapping"] if end > start]
    keep = n_ctx
    while keep > 0:
        prefix = text[: offsets[min(keep, len(offsets)) - 1]] if offsets else ""
        if len(tokenizer(prefix)["input_ids"]) <= n_ctx:
            return prefix
        keep -= max(1, keep // 20)
    return ""
