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
- ``stages.json``: each stage's status, the hash of the settings it depends on, and the size
  and sha256 of its outputs (:mod:`mlinguality.run.stages`).

Resume and reuse: a finished stage whose settings hash matches ``stages.json`` and whose files
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

import errno
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

from mlinguality.errors import MlingualityError, RunFault, RunInterrupted
from mlinguality.run.config import RunConfig
from mlinguality.run.distributed import world_size
from mlinguality.run.inputs import RunInputs
from mlinguality.run.stages import StageLog, clean_stale_temps

logger = logging.getLogger(__name__)

# bump when a stage's outputs change meaning; old cache entries are then ignored
# (2: cache entries carry checksums and are copied, not hard-linked)
_STAGE_FORMAT = 2
STAGES = ("collect", "score", "select", "ablate", "steer")


# --- stage keys ---------------------------------------------------------------------------


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
    collect = _digest("collect", model, vars(config.corpus), collection, config.collection_langs)
    sel = config.selectivity
    score = _digest(
        "score",
        collect,
        sel.metrics,
        sel.pairs,
        sel.control_pairs,
        sel.n_permutations,
        sel.n_bootstrap,
        sel.seed,
    )
    select = _digest("select", collect, sel.select_metric, sel.top_rate)
    ablation = {k: v for k, v in vars(config.ablation).items() if k != "batch_tokens"}
    ablate = _digest("ablate", select, ablation, config.seed)
    steering = {
        k: v for k, v in vars(config.steering).items() if k not in ("enabled", "batch_size")
    }
    steer = _digest("steer", select, steering, vars(config.corpus), config.seed)
    return {"collect": collect, "score": score, "select": select, "ablate": ablate, "steer": steer}


# --- the run -------------------------------------------------------------------------------


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


def _writable_dir(path: Path, key: str) -> str | None:
    """Create ``path`` if needed; None if files can be written there, else why not."""
    if path.exists() and not path.is_dir():
        return f"{key} {path}: is a file, not a folder; choose another {key}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"{key} {path}: cannot write there ({error.strerror}); choose another {key}"
    return None


def check_device(device: str) -> None:
    """Raise :class:`MlingualityError` unless ``device`` exists here (``cuda:N``: N in range).

    >>> check_device("cpu")
    >>> check_device("gpu")
    Traceback (most recent call last):
    ...
    mlinguality.errors.MlingualityError: model.device=gpu: not a torch device (cpu, cuda, cuda:N, mps)
    """
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise MlingualityError(
            f"model.device={device}: not a torch device (cpu, cuda, cuda:N, mps)"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise MlingualityError(
                f"model.device={device}: this torch ({torch.__version__}) sees no CUDA device; "
                "use model.device=cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise MlingualityError(
                f"model.device={device}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise MlingualityError("model.device=mps: no Apple MPS device here; use model.device=cpu")


def preflight(config: RunConfig) -> bool:
    """Check everything cheap before a run folder exists; return whether the cache is writable.

    Raises:
        MlingualityError: naming the key and value at fault (unknown metric, missing device,
            an output folder that is a file or read-only, a missing corpus file).
    """
    _check_names(config)
    check_device(config.model.device)
    source = config.corpus.source
    if source != "bible" and Path(source).suffix and not Path(source).is_file():
        raise MlingualityError(f"corpus.source {source}: no such file")
    problem = _writable_dir(Path(config.output_dir), "output_dir")
    if problem:
        raise MlingualityError(problem)
    if config.cache_dir is None:
        return False
    problem = _writable_dir(Path(config.cache_dir), "cache_dir")
    if problem:
        if Path(config.cache_dir).is_file():
            raise MlingualityError(problem)
        logger.warning("%s; finished stages are read from it but not stored", problem)
        return False
    return True


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
            and ablation are then shared with the other ranks (:mod:`mlinguality.run.distributed`).
    """
    cache_writable = preflight(config)
    start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise MlingualityError(f"--resume {run_dir}: no config.yaml there (not a run folder)")
    else:
        run_dir = new_run_dir(config)
    cache = Path(config.cache_dir) if config.cache_dir else None
    log = StageLog(run_dir, cache, cache_writable)
    tracker = None
    try:
        config.dump(run_dir / "config.yaml")
        logger.info("run folder %s", run_dir)
        from mlinguality.run.tracking import Tracker

        # W&B opens now, with the config, so a long run shows live progress (and a crash shows)
        tracker = Tracker(config.tracking, config.to_dict(), run_dir, name=run_dir.name)
        tracker.start()
        keys, origins = _run_stages(config, run_dir, log, model, tracker, team)
        from mlinguality.run.report import write_report

        total = time.perf_counter() - start
        summary = write_report(config, run_dir, log.finished, origins, total)
        _mirror_to_wandb(tracker, run_dir, summary, keys)
    except BaseException as error:
        if tracker is not None:
            tracker.finish(exit_code=1)
        _stop(error, config, run_dir, log, fresh=resume is None)
        raise  # only for exceptions _stop leaves alone (SystemExit)
    tracker.finish()
    if tracker.offline_dir is not None:
        logger.info("W&B offline run: upload later with `wandb sync %s`", tracker.offline_dir)
    logger.info("done in %.1f s: %s", time.perf_counter() - start, run_dir / "report.md")
    return run_dir


def _run_stages(config: RunConfig, run_dir: Path, log: StageLog, model, tracker, team=None):
    """Run (or reuse) every enabled stage in order; return the stage keys and origins."""
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    from mlinguality.model import set_threads
    from mlinguality.run import pipeline as stages

    set_threads(config.model.threads)

    model_id = None
    if model is not None:
        from mlinguality.fingerprint import model_fingerprint

        model_id = model_fingerprint(model)
    keys = stage_keys(config, model_id)
    inputs = RunInputs(config)
    inputs._model = model
    inputs.team = team
    home = log.cache_dir if log.cache_writable else run_dir
    clean_stale_temps(home)
    partial, lock = _checkpoint_dir(home, run_dir, keys["collect"], config.collection_batch_tokens)
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
    origins: dict[str, str] = {}
    # under torchrun the other ranks serve collect and ablate, then go (run/distributed.py)
    shared = [stage for stage, _ in steps if stage in ("collect", "ablate")][-1]
    try:
        for done, (stage, compute) in enumerate(steps, start=1):
            try:
                origins[stage] = log.run(stage, keys[stage], compute)
            finally:
                if stage == "collect":
                    _release(lock, home, run_dir)
            if team is not None and stage == shared:
                team.stop()
            tracker.log_stage(stage, done, len(steps), log.entries[stage]["seconds"])
    finally:
        _release(lock, home, run_dir)
    return keys, origins


def _release(lock, home: Path, run_dir: Path) -> None:
    if lock.is_locked:
        lock.release()
    if home == run_dir:  # a private lock file: nobody else can be waiting on it
        Path(lock.lock_file).unlink(missing_ok=True)


def _checkpoint_dir(home: Path, run_dir: Path, key: str, batch_tokens: int):
    """Where collection checkpoints go, and the lock that reserves it (release it when done).

    Checkpoints of a killed collection live beside the cache, so any rerun with the same settings
    resumes them. The batch plan is part of a checkpoint, so another ``batch_tokens`` starts a
    fresh one (the old one is removed). A run that finds another live run collecting the same
    stage checkpoints into its own folder instead, so the two never write the same files.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(home / f".partial-collect-{key}.lock"))
    partial = home / f".partial-collect-{key}-b{batch_tokens}"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another run is collecting the same statistics; checkpointing in %s", run_dir)
        return run_dir / partial.name, lock
    for other in home.glob(f".partial-collect-{key}-b*"):
        if other != partial:
            shutil.rmtree(other, ignore_errors=True)
    return partial, lock


_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _stop(error: BaseException, config: RunConfig, run_dir: Path, log: StageLog, fresh: bool):
    """Record why a run stopped and raise the one-line error the command line prints."""
    where = f"stage {log.current}" if log.current else "the report"
    resume = f"resume with `mlinguality run --resume {run_dir}`"
    if world_size() > 1:  # under torchrun: every rank resumes
        resume = (
            f"resume with the same torchrun command and `-m mlinguality run --resume {run_dir}`"
        )
    if isinstance(error, KeyboardInterrupt):
        log.mark("interrupted")
        raise RunInterrupted(f"interrupted at {where}; {resume}") from None
    if isinstance(error, RunFault):  # not the input's fault (a rank lost under torchrun)
        log.mark("failed", error=str(error))
        raise RunFault(f"{error} (at {where}; {resume})") from None
    if isinstance(error, MlingualityError):
        log.mark("failed", error=str(error))
        if fresh and not log.finished:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping
            raise error
        raise type(error)(f"{error} (at {where}; fix it, then {resume})") from None
    if isinstance(error, OSError):
        log.mark("failed", error=str(error))
        what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
        if error.errno in _ENVIRONMENT_ERRORS:
            raise RunFault(
                f"{what} (at {where}); free space or fix permissions, then {resume}"
            ) from None
        raise RunFault(f"{what} (at {where}); {resume}") from None
    if isinstance(error, Exception):
        log.mark("failed", error=f"{type(error).__name__}: {error}")
        first = (str(error).splitlines() or [""])[0]
        raise RunFault(
            f"{type(error).__name__} at {where}: {first} "
            f"(a bug? rerun with -v for the traceback; {resume})"
        ) from error


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
