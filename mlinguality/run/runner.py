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
- ``ablation.csv``, ``ablation.json``, ``ablation.png``: per-language bits per byte under every
  ablation, the matrix of changes and its diagonal dominance;
- ``summary.json`` (the headline numbers), ``report.md`` with the plots under ``plots/``;
- ``stages.json``: which stages finished, with the hash of the settings they depend on.

Resume and reuse: a stage whose settings hash matches ``stages.json`` is skipped (a rerun with
``--resume`` continues where it stopped). With ``cache_dir`` set, every finished stage is also
kept under ``cache_dir/{stage}-{hash}/``, so a later run with the same settings (a sweep over
``selectivity.top_rate`` reusing the collected statistics, say) links the files instead of
recomputing them. Collection also checkpoints each language mid-way.

W&B (:mod:`mlinguality.run.tracking`) opens with the config when the run starts, logs each
stage as it finishes, then mirrors the local results and logs them as artifacts; a W&B failure
warns and the run still completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig

logger = logging.getLogger(__name__)

_STAGE_FORMAT = 1  # bump when a stage's outputs change meaning; old cache entries are then ignored
STAGES = ("collect", "score", "select", "ablate", "steer")
_OUTPUTS = {
    "collect": ["stats", "corpus.json"],
    "score": ["layer_profile.csv", "u_shape.csv"],
    "select": [
        "selectivity.csv",
        "selected_neurons.safetensors",
        "selected_neurons.csv",
        "selected_neurons.json",
    ],
    "ablate": ["ablation.csv", "ablation.json", "ablation.png"],
    "steer": ["steering"],
}


# --- stage bookkeeping ---------------------------------------------------------------------


def _digest(*parts: Any) -> str:
    text = json.dumps([_STAGE_FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_keys(config: RunConfig, model_id: str | None = None) -> dict[str, str]:
    """The settings hash of every stage; a stage's hash covers everything upstream of it.

    Knobs that do not change results (device, threads, batch sizes, tracking) are left out, so
    a run on another machine or with another batch size reuses the same stages. ``model_id``
    (a :func:`~mlinguality.fingerprint.model_fingerprint` of a model handed to the runner)
    replaces the spec string: the cache then follows the weights, not the name.
    """
    model = {"spec": config.model.spec, "dtype": config.model.dtype}
    if model_id is not None:
        model = {"fingerprint": model_id, "dtype": config.model.dtype}
    collection = {k: v for k, v in vars(config.collection).items() if k != "batch_tokens"}
    collect = _digest("collect", model, vars(config.corpus), collection)
    sel = config.selectivity
    score = _digest(
        "score", collect, sel.metrics, sel.pairs, sel.n_permutations, sel.n_bootstrap, sel.seed
    )
    select = _digest("select", collect, sel.select_metric, sel.top_rate)
    ablation = {k: v for k, v in vars(config.ablation).items() if k != "batch_tokens"}
    ablate = _digest("ablate", select, ablation, config.seed)
    steering = {
        k: v for k, v in vars(config.steering).items() if k not in ("enabled", "batch_size")
    }
    steer = _digest("steer", select, steering, vars(config.corpus), config.seed)
    return {"collect": collect, "score": score, "select": select, "ablate": ablate, "steer": steer}


class StageLog:
    """``stages.json`` of a run folder: finished stages with their key, seconds and origin."""

    def __init__(self, run_dir: Path, cache_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.path = run_dir / "stages.json"
        self.entries: dict[str, dict] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )

    def _complete(self, folder: Path, stage: str) -> bool:
        return all((folder / name).exists() for name in _OUTPUTS[stage])

    def run(self, stage: str, key: str, compute: Callable[[], None]) -> str:
        """Reuse ``stage`` from this folder or the cache, else compute it; return the origin."""
        entry = self.entries.get(stage)
        if entry and entry["key"] == key and self._complete(self.run_dir, stage):
            logger.info("stage %s: already done in %s", stage, self.run_dir)
            return "resumed"
        cached = self.cache_dir / f"{stage}-{key}" if self.cache_dir else None
        start = time.perf_counter()
        if cached is not None and (cached / ".done").exists() and self._complete(cached, stage):
            logger.info("stage %s: reusing %s", stage, cached)
            for name in _OUTPUTS[stage]:
                _link(cached / name, self.run_dir / name)
            origin = f"cache:{cached.name}"
        else:
            for name in _OUTPUTS[stage]:  # unlink, never overwrite: the files may be cache links
                _remove(self.run_dir / name)
            compute()
            if cached is not None:
                _store(self.run_dir, cached, _OUTPUTS[stage])
            origin = "computed"
        self.entries[stage] = {
            "key": key,
            "seconds": round(time.perf_counter() - start, 3),
            "origin": origin,
        }
        self.path.write_text(json.dumps(self.entries, indent=1))
        return origin


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _link(source: Path, target: Path) -> None:
    """Hard-link (copy where links fail) a file or folder tree into place."""
    _remove(target)

    def one(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, target, copy_function=one)
    else:
        one(str(source), str(target))


def _store(run_dir: Path, cached: Path, names: list[str]) -> None:
    """Copy a finished stage's outputs into the cache atomically (temp folder, then rename)."""
    tmp = cached.with_name(f".{cached.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        _link(run_dir / name, tmp / name)
    (tmp / ".done").write_text("")
    try:
        os.replace(tmp, cached)
    except OSError:  # another process stored the same stage first
        shutil.rmtree(tmp, ignore_errors=True)


# --- the run -------------------------------------------------------------------------------


def new_run_dir(config: RunConfig) -> Path:
    """A fresh ``{output_dir}/{name}-{YYYYmmdd-HHMMSS}`` folder (a suffix if taken)."""
    base = Path(config.output_dir) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    run_dir.mkdir(parents=True)
    return run_dir


class _Inputs:
    """The model and corpus splits, loaded on first use (a fully reused run loads neither)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self._model = None
        self._splits = None
        self.team = None  # rank 0's torchrun team, when there is one

    @property
    def model(self):
        if self._model is None:
            self._model = _load_model(self.config)
        return self._model

    @property
    def splits(self):
        if self._splits is None:
            from mlinguality.corpus import load_corpus

            corpus_cfg = self.config.corpus
            corpus = load_corpus(
                corpus_cfg.source,
                corpus_cfg.langs,
                books=corpus_cfg.books,
                limit=corpus_cfg.limit,
                seed=corpus_cfg.seed,
                translations=corpus_cfg.translations,
            )
            select, evaluate = corpus.split(corpus_cfg.eval_fraction)
            if len(select) < 2 or len(evaluate) < 1:
                raise MlingualityError(
                    f"corpus {corpus_cfg.source}: {len(corpus)} examples split into "
                    f"{len(select)} to select and {len(evaluate)} to evaluate; raise corpus.limit"
                )
            self._splits = (corpus, select, evaluate)
        return self._splits


def _load_model(config: RunConfig):
    from mlinguality.model import TinyModelConfig, load_model

    spec: Any = config.model.spec
    if spec == "tiny" or spec.startswith("tiny:"):
        architecture = spec.partition(":")[2] or "gemma3"
        spec = TinyModelConfig(
            architecture=architecture, n_layers=4, d_model=32, d_mlp=64, seed=config.seed
        )
    return load_model(spec, device=config.model.device, dtype=config.model.dtype)


def _check_names(config: RunConfig) -> None:
    """Fail before any heavy work on metric names the selectivity stage does not know."""
    from mlinguality.selectivity.profile import PROFILE_METRICS
    from mlinguality.selectivity.selection import SELECTION_METRICS

    for metric in config.selectivity.metrics:
        if metric not in PROFILE_METRICS:
            raise MlingualityError(
                f"selectivity.metrics: unknown {metric!r}; choose from {', '.join(PROFILE_METRICS)}"
            )
    if config.selectivity.select_metric not in SELECTION_METRICS:
        raise MlingualityError(
            f"selectivity.select_metric: unknown {config.selectivity.select_metric!r}; "
            f"choose from {', '.join(SELECTION_METRICS)}"
        )
    langs = set(config.corpus.langs)
    for pair in config.selectivity.pairs or []:
        missing = [lang for lang in pair.split("-") if lang not in langs]
        if missing:
            raise MlingualityError(
                f"selectivity.pairs: {pair!r} names {missing[0]!r}, not in corpus.langs"
            )


def run_experiment(
    config: RunConfig, resume: str | Path | None = None, model=None, team=None
) -> Path:
    """Run (or resume) the whole pipeline; return the run folder.

    Args:
        config: The resolved run configuration.
        resume: An earlier run folder to finish; stages whose settings are unchanged are kept.
        model: A model already loaded (a notebook or test session that holds it saves the
            load; or your own TransformerBridge); by default ``config.model.spec`` is loaded
            when a stage first needs it. Cached stages are then keyed on its weights
            (:func:`~mlinguality.fingerprint.model_fingerprint`), not on ``model.spec``.
        team: Under torchrun, rank 0's :class:`~mlinguality.run.distributed.Team`: collection
            and ablation are then shared with the other ranks (see ``run/distributed.py``).
    """
    _check_names(config)
    start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise MlingualityError(f"--resume {run_dir}: no config.yaml there (not a run folder)")
    else:
        run_dir = new_run_dir(config)
    config.dump(run_dir / "config.yaml")
    logger.info("run folder %s", run_dir)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.model.threads is not None:
        torch.set_num_threads(config.model.threads)

    from mlinguality.run import pipeline as stages

    cache = Path(config.cache_dir) if config.cache_dir else None
    log = StageLog(run_dir, cache)
    model_id = None
    if model is not None:
        from mlinguality.fingerprint import model_fingerprint

        model_id = model_fingerprint(model)
    keys = stage_keys(config, model_id)
    inputs = _Inputs(config)
    inputs._model = model
    inputs.team = team
    # checkpoints of a killed collection live beside the cache, so any rerun resumes them
    partial = (cache or run_dir) / f".partial-collect-{keys['collect']}"
    steps: list[tuple[str, Callable[[], None]]] = [
        ("collect", lambda: stages.collect(config, inputs, run_dir, partial)),
        ("score", lambda: stages.score(config, run_dir)),
        ("select", lambda: stages.select(config, run_dir)),
    ]
    if config.ablation.enabled:
        steps.append(("ablate", lambda: stages.ablate(config, inputs, run_dir)))
    if config.steering.enabled:
        from mlinguality.run.steering import stage as steer

        steps.append(("steer", lambda: steer(config, inputs, run_dir)))

    from mlinguality.run.report import write_report
    from mlinguality.run.tracking import Tracker

    # W&B opens now, with the config, so a long run shows live progress (and a crash shows)
    tracker = Tracker(config.tracking, config.to_dict(), run_dir, name=run_dir.name)
    tracker.start()
    try:
        origins = {}
        for done, (stage, compute) in enumerate(steps, start=1):
            origins[stage] = log.run(stage, keys[stage], compute)
            tracker.log_stage(stage, done, len(steps), log.entries[stage]["seconds"])
        total = time.perf_counter() - start
        summary = write_report(config, run_dir, log.entries, origins, total)
        _mirror_to_wandb(tracker, run_dir, summary, keys)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    if tracker.offline_dir is not None:
        logger.info("W&B offline run: upload later with `wandb sync %s`", tracker.offline_dir)
    logger.info("done in %.1f s: %s", time.perf_counter() - start, run_dir / "report.md")
    return run_dir


def _mirror_to_wandb(tracker, run_dir: Path, summary: dict, keys: dict[str, str]) -> None:
    """Per-layer series, tables, images, the summary and the artifacts of a finished run."""
    if not tracker.active:
        return
    from mlinguality.run.report import wandb_payload

    payload = wandb_payload(run_dir, summary)
    tracker.log_layers(payload["layers"])
    for key, (columns, rows) in payload["tables"].items():
        tracker.log_table(key, columns, rows)
    tracker.log_images(payload["images"])
    tracker.set_summary(payload["summary"])
    from mlinguality.run.steering import OUTPUT, log_steering

    log_steering(tracker, run_dir / OUTPUT)
    meta = {"run": run_dir.name, "model": summary["run"]["model"], "langs": summary["run"]["langs"]}
    tracker.log_artifact(
        f"stats-{keys['collect']}",
        "stats",
        [run_dir / "stats", run_dir / "corpus.json"],
        {**meta, "stage_key": keys["collect"]},
    )
    neurons = ["selected_neurons.csv", "selected_neurons.json", "selected_neurons.safetensors"]
    tracker.log_artifact(
        f"neurons-{keys['select']}",
        "selected-neurons",
        [run_dir / name for name in neurons],
        {**meta, "stage_key": keys["select"]},
    )
    report = [
        "report.md",
        "summary.json",
        "plots",
        "layer_profile.csv",
        "u_shape.csv",
        "selectivity.csv",
        "ablation.csv",
        "ablation.json",
        "ablation.png",
    ]
    tracker.log_artifact(
        f"report-{run_dir.name}", "report", [run_dir / name for name in report], meta
    )
    tracker.log_artifact(f"config-{run_dir.name}", "config", [run_dir / "config.yaml"], meta)
