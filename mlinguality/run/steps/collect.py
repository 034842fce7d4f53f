"""The ``collect`` step: activation statistics of the selection split -> ``stats/``, ``corpus.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlinguality.run.config import RunConfig
from mlinguality.run.inputs import StageContext


def collect(ctx: StageContext) -> None:
    """Activation statistics of the selection split -> ``stats/``, ``corpus.json``.

    Partial statistics are checkpointed in ``ctx.checkpoints`` (removed when done), so a killed
    collection resumes from there.
    """
    config, inputs, run_dir, checkpoints = ctx.config, ctx.inputs, ctx.run_dir, ctx.checkpoints
    from mlinguality.activations.collect import collect as collect_stats
    from mlinguality.activations.stats import save_stats

    corpus, select, evaluate = inputs.splits
    coll = config.collection
    if coll.stats is not None:  # merged shards (mlinguality collect --shard, merge)
        from mlinguality.run.shards import load_merged

        stats = load_merged(config, inputs, Path(coll.stats))
    elif inputs.team is not None:  # torchrun: every rank collects a shard (run/distributed.py)
        stats = inputs.team.collect(inputs, config, checkpoints)
    else:
        stats = collect_stats(
            inputs.model,
            select,
            config.collection_langs,  # corpus.langs and the same-language controls
            positions=coll.positions,
            include_bos=coll.include_bos,
            per_example=coll.per_example,
            batch_tokens=config.collection_batch_tokens,
            checkpoint_dir=checkpoints,
            progress=True,
            **config.residual_collection,  # the lenses stage's residuals, same pass
        )
    save_stats(stats, run_dir / "stats")
    shutil.rmtree(checkpoints, ignore_errors=True)
    info = {
        "source": corpus.source or config.corpus.source,
        "langs": list(config.collection_langs),
        "translations": dict(corpus.translations),
        "n_examples": len(corpus),
        "n_select": len(select),
        "n_eval": len(evaluate),
        "drops": dict(corpus.drops),
        "n_tokens": {lang: s.n_tokens for lang, s in stats.items()},
        "example_ids": {"select": list(select.ids), "eval": list(evaluate.ids)},
    }
    (run_dir / "corpus.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))


def load_run_stats(config: RunConfig, run_dir: Path, controls: bool = False):
    """The statistics of ``corpus.langs`` (and of the control languages if ``controls``)."""
    from mlinguality.activations.stats import load_stats

    langs = config.collection_langs if controls else config.corpus.langs
    return load_stats(run_dir / "stats", list(langs))
