"""The ``lenses`` step: the residual stream, layer by layer -> ``lenses/``.

Reads the residuals the collection pass recorded (``lenses.enabled``: each selection example's
mean ``blocks.L.hook_resid_post`` and a seeded sample of positions per language), no model
pass of its own beyond the logit lens's products with the unembedding. Writes:

- ``logit_lens.csv``: per layer and language, the lens's next-token loss and the language of
  its top-1 tokens (:func:`mlinguality.lenses.logit_lens.logit_lens`), the tokens' languages
  from the selection split's own counts (as the neuron cards');
- ``probes.csv``: per layer, the language-ID probe over the corpus languages, cross-validated
  in ``lenses.folds`` folds of the selection examples grouped by example (a verse's
  translations are never split between training and test), the folds' mean (and
  ``probes_by_fold.csv``); the evaluation split is not read, so the stage needs no pass over it;
- ``similarity.csv``, ``similarity_u.csv``: per layer and pair, linear CKA and retrieval of the
  parallel examples, against the same-language floor, with bootstrap intervals and U
  (:func:`mlinguality.lenses.similarity.similarity_profile`).
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from mlinguality.errors import MlingualityError
from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats

OUTPUT = "lenses"  # the stage's folder inside a run folder
logger = logging.getLogger(__name__)


def example_folds(n_examples: int, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint sets of example indices covering ``range(n_examples)`` (seeded).

    >>> [len(f) for f in example_folds(7, 2, 0)]
    [4, 3]
    """
    if n_examples < folds:
        raise MlingualityError(
            f"lenses.folds: {folds} folds need at least {folds} selection examples, "
            f"got {n_examples}"
        )
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed))
    return [order[index::folds].sort().values for index in range(folds)]


def cross_validated_probe(means: dict, folds: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The probe table averaged over folds, and the per-fold rows."""
    from mlinguality.lenses.probes import language_probe

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


def lenses(ctx: StageContext) -> None:
    """Logit lens, probes and cross-lingual similarity -> ``lenses/``."""
    from mlinguality.dashboards.token_language import token_languages
    from mlinguality.lenses.logit_lens import logit_lens_languages
    from mlinguality.lenses.similarity import similarity_profile
    from mlinguality.selectivity.profile import default_pairs

    config, inputs, run_dir = ctx.config, ctx.inputs, ctx.run_dir
    opts = config.lenses
    stats = load_run_stats(config, run_dir, controls=True)
    missing = [lang for lang, s in stats.items() if s.example_resid_mean is None]
    if missing:
        raise MlingualityError(
            f"lenses: the collected statistics of {', '.join(missing)} hold no residuals "
            "(collected with lenses.enabled=false); rerun collection with lenses.enabled=true"
        )
    langs = list(config.corpus.langs)
    out = run_dir / OUTPUT
    out.mkdir(parents=True, exist_ok=True)

    _, select, _ = inputs.splits
    model = inputs.model
    table = token_languages(
        model.tokenizer, {lang: select.texts(lang) for lang in langs}, vocab_size=model.cfg.d_vocab
    )
    samples = {
        lang: (stats[lang].lens_resid, stats[lang].lens_next)
        for lang in langs
        if stats[lang].lens_next is not None and stats[lang].lens_next.numel()
    }
    if not samples:
        logger.warning("lenses: no position has a next token (collection.positions=last); no logit lens")
    lens = logit_lens_languages(model, samples, table, english=opts.english)
    lens.to_csv(out / "logit_lens.csv", index=False)

    means = {lang: stats[lang].example_resid_mean for lang in langs}
    probes, by_fold = cross_validated_probe(means, opts.folds, config.seed)
    probes.to_csv(out / "probes.csv", index=False)
    by_fold.to_csv(out / "probes_by_fold.csv", index=False)

    sel = config.selectivity
    pairs = [tuple(pair.split("-")) for pair in sel.pairs] if sel.pairs else default_pairs(langs)
    floors = [tuple(pair.split("/")) for pair in config.control_pairs]
    profile = similarity_profile(
        {lang: s.example_resid_mean for lang, s in stats.items()},
        pairs,
        floors,
        n_boot=opts.n_boot,
        seed=config.seed,
    )
    profile.layers.to_csv(out / "similarity.csv", index=False)
    profile.u_shape.to_csv(out / "similarity_u.csv", index=False)
