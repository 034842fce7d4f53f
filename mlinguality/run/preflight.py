"""Checks of a run's config before its folder exists: names, device, corpus file, writable folders.

A run refused here leaves nothing behind: no run folder, no W&B run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig

logger = logging.getLogger(__name__)


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


def preflight(config: RunConfig, model=None) -> bool:
    """Check everything cheap before a run folder exists; return whether the cache is writable.

    Raises:
        MlingualityError: naming the key and value at fault (unknown metric, missing device,
            an output folder that is a file or read-only, a missing corpus file, a model with
            fewer layers than the U-shape statistic needs).
    """
    _check_names(config)
    check_depth(config, model)
    check_device(config.model.device)
    source = config.corpus.source
    if source != "bible" and Path(source).suffix and not Path(source).is_file():
        raise MlingualityError(f"corpus.source {source}: no such file")
    _check_corpus_languages(config)
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


def check_depth(config: RunConfig, model=None) -> None:
    """Refuse a model with fewer than 3 layers (read from its config.json, or ``model``) before
    any work: the score stage's U-shape statistic (``u_shape.csv``) compares the first and last
    quarter of the layers with the middle half."""
    from mlinguality.model import model_depth

    depth = model.cfg.n_layers if model is not None else model_depth(config.model.spec)
    if depth is not None and depth < 3:
        raise MlingualityError(
            f"model.spec {config.model.spec}: {depth} layer(s); the score stage's U-shape "
            "statistic (u_shape.csv: first and last quarter of the layers against the middle "
            "half) needs at least 3"
        )


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


def _check_corpus_languages(config: RunConfig) -> None:
    """Every language the run collects is a column (key, file) of a corpus file, read from its
    first line: a missing one stops the run here, before its folder or W&B run exist."""
    from mlinguality.corpus.readers import file_languages, listed_columns

    source = config.corpus.source
    if source == "bible":
        return
    what, available = file_languages(source, config.corpus.tsv_quoting)
    if not what:
        return  # unreadable first line: the corpus reader names the line and the fault
    if what == "file" and not available:
        return  # no Moses files either: the reader says which sources it understands
    listed = listed_columns(available)
    for lang in config.collection_langs:
        if lang in available:
            continue
        if lang in config.corpus.langs:
            raise MlingualityError(
                f"corpus.langs: {source} has no {what} for language {lang!r}; available: {listed}"
            )
        pair = next(p for p in config.control_pairs if lang in p.split("/"))
        raise MlingualityError(
            f"selectivity.control_pairs: {pair!r} needs {lang!r}, but {source} has no "
            f"{what} for it (available: {listed}); set selectivity.control_pairs: [] or add it"
        )
