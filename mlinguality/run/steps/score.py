"""The ``score`` step: the per-layer profile with permutation p-values -> ``layer_profile.csv``,
``u_shape.csv``."""

from __future__ import annotations

from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats


def score(ctx: StageContext) -> None:
    """Per-layer profile with permutation p-values -> ``layer_profile.csv``, ``u_shape.csv``."""
    from mlinguality.selectivity.profile import selectivity_profile

    config, run_dir = ctx.config, ctx.run_dir
    sel = config.selectivity
    pairs = [tuple(pair.split("-")) for pair in sel.pairs] if sel.pairs else None
    controls = [tuple(pair.split("/")) for pair in config.control_pairs]
    profile = selectivity_profile(
        load_run_stats(config, run_dir, controls=True),
        pairs=pairs,
        metrics=sel.metrics,
        n_permutations=sel.n_permutations,
        n_bootstrap=sel.n_bootstrap,
        seed=sel.seed,
        control_pairs=controls,
    )
    profile.layers.to_csv(run_dir / "layer_profile.csv", index=False)
    profile.u_shape.to_csv(run_dir / "u_shape.csv", index=False)
