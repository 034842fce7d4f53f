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

from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats

OUTPUT = "lenses"  # the stage's folder inside a run folder


def lenses(ctx: StageContext) -> None:
    """Logit lens, probes and cross-lingual similarity -> ``lenses/``."""
    from mlinguality.dashboards.token_language import token_languages
    from mlinguality.lenses.views import layer_views
    from mlinguality.selectivity.profile import default_pairs

    config, inputs, run_dir = ctx.config, ctx.inputs, ctx.run_dir
    opts, sel = config.lenses, config.selectivity
    langs = list(config.corpus.langs)
    _, select, _ = inputs.splits
    model = inputs.model
    views = layer_views(
        model,
        load_run_stats(config, run_dir, controls=True),
        langs,
        token_languages(
            model.tokenizer,
            {lang: select.texts(lang) for lang in langs},
            vocab_size=model.cfg.d_vocab,
        ),
        pairs=[tuple(p.split("-")) for p in sel.pairs] if sel.pairs else default_pairs(langs),
        floor_pairs=[tuple(pair.split("/")) for pair in config.control_pairs],
        folds=opts.folds,
        n_boot=opts.n_boot,
        seed=config.seed,
        english=opts.english,
    )
    out = run_dir / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    views.lens.to_csv(out / "logit_lens.csv", index=False)
    views.probes.to_csv(out / "probes.csv", index=False)
    views.probes_by_fold.to_csv(out / "probes_by_fold.csv", index=False)
    views.similarity.layers.to_csv(out / "similarity.csv", index=False)
    views.similarity.u_shape.to_csv(out / "similarity_u.csv", index=False)
