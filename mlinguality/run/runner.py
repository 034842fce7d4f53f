"""The experiment runner: collect -> score -> select -> ablate -> report, into one run folder.

:func:`run_experiment` takes a :class:`~mlinguality.run.config.RunConfig` and writes
``{output_dir}/{name}-{time}/``:

- ``config.yaml``: the resolved config (``mlinguality run --resume DIR`` reads it back);
- ``stats/{lang}.safetensors``: per-language activation statistics of the selection split;
- ``corpus.json``: the corpus actually used (sizes, translations, drops);
- ``layer_profile.csv``, ``u_shape.csv``: the per-layer selectivity profile with permutation
  p-values, and the U-shape statistic per metric and pair;
- ``selectivity.csv``, ``selected_neurons.safetensors``: the language-specific neurons
  (count per language and layer; the masks), and ``selected_neurons.csv``/``.json``: one row
  per (lang, layer, neuron, score);
- ``ablation.csv``, ``ablation.json``: per-language bits per byte under every ablation, the
  matrix of changes and its diagonal dominance (``ablation.png``, its heatmap, with plots on);
- ``summary.json`` (the headline numbers), ``report.md`` with the plots under ``plots/``;
- ``stages.json``: each stage's status, its key, and the size and sha256 of its outputs
  (:mod:`mlinguality.run.stage_cache`).

The stages and their outputs are declared once in :mod:`mlinguality.run.stages`; their keys
(:mod:`mlinguality.run.keys`) cover their settings and the contents of the model and corpus.

Resume and reuse: a finished stage whose key matches ``stages.json`` and whose files
still match their checksums is skipped (a rerun with ``--resume`` continues where it stopped).
With ``cache_dir`` set, every finished stage is also kept under ``cache_dir/{stage}-{hash}/``, so
a later run with the same settings (a sweep over ``selectivity.top_rate`` reusing the collected
statistics, say) copies the files instead of recomputing them; a damaged cache entry is rebuilt.
Collection also checkpoints each language mid-way.

Faults: the inputs are checked before the run folder is made, and a run that fails on bad
input before finishing a stage leaves no folder behind. Ctrl-C (or SIGTERM) and environment
faults (a full disk) mark the running stage ``interrupted``/``failed`` and raise one line saying
``resume with `mlinguality run --resume DIR```.

W&B (:mod:`mlinguality.run.tracking`) opens with the config when the run starts, logs each
stage as it finishes, then mirrors the local results and logs them as artifacts; a W&B failure
warns and the run still completes.
"""

from __future__ import annotations

import logging
import random
import time
from functools import partial
from pathlib import Path

import torch

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.failures import stop_run
from mlinguality.run.inputs import RunInputs, StageContext
from mlinguality.run.keys import input_fingerprints, stage_keys
from mlinguality.run.locks import checkpoint_dir, lock_run, release
from mlinguality.run.preflight import preflight
from mlinguality.run.resume import check_same_config, is_finished, source_run
from mlinguality.run.stage_cache import StageLog, clean_stale_temps
from mlinguality.run.stages import enabled_stages

logger = logging.getLogger(__name__)


def new_run_dir(config: RunConfig) -> Path:
    """A fresh ``{output_dir}/{name}-{YYYYmmdd-HHMMSS}`` folder (a suffix if taken)."""
    base = Path(config.output_dir) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:  # another run started in the same second
            run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1


def run_experiment(
    config: RunConfig,
    resume: str | Path | None = None,
    model=None,
    team=None,
    start_from: str | Path | None = None,
) -> Path:
    """Run (or resume) the whole pipeline; return the run folder.

    Args:
        config: The resolved run configuration (its relative paths are made absolute against
            the working directory, and saved so).
        resume: An earlier run folder to finish with its own config (another config is
            refused, naming the first key that differs; a finished run is left as it is).
        model: A model already loaded (a notebook or test session that holds it saves the
            load; or your own TransformerBridge); by default ``config.model.spec`` is loaded
            when a stage first needs it. Cached stages are then keyed on its weights
            (:func:`~mlinguality.fingerprint.model_fingerprint`), not on ``model.spec``.
        team: Under torchrun, rank 0's :class:`~mlinguality.run.team.Team`: collection
            and ablation are then shared with the other ranks (:mod:`mlinguality.run.team`).
        start_from: An earlier run folder whose finished stages a new run reuses where their
            keys match (``mlinguality run --from RUN_DIR``).
    """
    config = config.with_absolute_paths()
    if resume is not None and start_from is not None:
        raise MlingualityError("--resume and --from: give one (--from starts a new run)")
    if resume is not None:
        check_same_config(config, Path(resume))
    source = StageLog(source_run(Path(start_from)), None) if start_from is not None else None
    cache_writable = preflight(config, model)
    start = time.perf_counter()
    run_dir = Path(resume) if resume is not None else new_run_dir(config)
    lock = lock_run(run_dir)
    cache = Path(config.cache_dir) if config.cache_dir else None
    log = StageLog(run_dir, cache, cache_writable, source=source)
    tracker = None
    try:
        keys = stage_keys(config, input_fingerprints(config, model, cache))
        if resume is not None and is_finished(
            run_dir, keys, [stage.name for stage in enabled_stages(config)]
        ):
            logger.info("run %s is finished; nothing to resume", run_dir)
            return run_dir
        config.dump(run_dir / "config.yaml")
        logger.info("run folder %s", run_dir)
        from mlinguality.run.tracking import Tracker

        # W&B opens now, with the config, so a long run shows live progress (and a crash shows)
        tracker = Tracker(config.tracking, config.to_dict(), run_dir, name=run_dir.name)
        tracker.start()
        origins = _run_stages(config, run_dir, log, keys, model, tracker, team)
        from mlinguality.run.report import write_report

        total = time.perf_counter() - start
        summary = write_report(config, run_dir, log.finished, origins, total)
        from mlinguality.run.mirror import mirror_run

        mirror_run(tracker, run_dir, summary, keys)
    except BaseException as error:
        if tracker is not None:
            tracker.finish(exit_code=1)
        stop_run(error, config, run_dir, log, fresh=resume is None)
        raise  # only for exceptions _stop leaves alone (SystemExit)
    finally:
        lock.release()
    tracker.finish()
    if tracker.offline_dir is not None:
        logger.info("W&B offline run: upload later with `wandb sync %s`", tracker.offline_dir)
    logger.info("done in %.1f s: %s", time.perf_counter() - start, run_dir / "report.md")
    return run_dir


def _run_stages(config: RunConfig, run_dir: Path, log: StageLog, keys, model, tracker, team=None):
    """Run (or reuse) every enabled stage in declared order; return their origins."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    from mlinguality.model import set_threads

    set_threads(config.model.threads)
    home = log.cache_dir if log.cache_writable else run_dir
    inputs = RunInputs(config, model=model, team=team)
    clean_stale_temps(home)
    stages = enabled_stages(config)
    # under torchrun the other ranks serve the team stages, then go (run/team.py)
    last_team_stage = [stage.name for stage in stages if stage.team][-1]
    origins: dict[str, str] = {}
    for done, stage in enumerate(stages, start=1):
        checkpoints, lock = None, None
        if stage.checkpoints:
            checkpoints, lock = checkpoint_dir(
                home, run_dir, stage.name, keys[stage.name], config.collection_batch_tokens
            )
        context = StageContext(config, inputs, run_dir, checkpoints)
        try:
            origins[stage.name] = log.run(
                stage.name, keys[stage.name], stage.outputs, partial(stage.step, context)
            )
        finally:
            release(lock)
        if team is not None and stage.name == last_team_stage:
            team.stop()
        tracker.log_stage(stage.name, done, len(stages), log.entries[stage.name]["seconds"])
    return origins
