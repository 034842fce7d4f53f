"""The runner's four stage steps: read the inputs, call the library stage, write the files.

Each step reads only the run folder (and, for collect and ablate, the model and corpus; for
collect, ``collection.stats`` if set) and writes exactly the outputs
:mod:`mlinguality.run.runner` lists for it, so any finished step can be reused from the folder
or the stage cache. The science lives in the library modules
(:mod:`~mlinguality.activations.collect`, :mod:`~mlinguality.selectivity.profile`, :mod:`~mlinguality.selectivity.selection`,
:mod:`~mlinguality.ablation.hooks`, :mod:`~mlinguality.ablation.matrix`); nothing here computes a
number of its own. Under torchrun, collect and ablate hand their work to the ranks
(:mod:`mlinguality.run.distributed`); the files written are the same.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from mlinguality.run.config import RunConfig

logger = logging.getLogger(__name__)


def collect(config: RunConfig, inputs, run_dir: Path, checkpoints: Path) -> None:
    """Activation statistics of the selection split -> ``stats/``, ``corpus.json``.

    Partial statistics are checkpointed in ``checkpoints`` (removed when done), so a killed
    collection resumes from there.
    """
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


def _load(config: RunConfig, run_dir: Path, controls: bool = False):
    """The statistics of ``corpus.langs`` (and of the control languages if ``controls``)."""
    from mlinguality.activations.stats import load_stats

    langs = config.collection_langs if controls else config.corpus.langs
    return load_stats(run_dir / "stats", list(langs))


def score(config: RunConfig, run_dir: Path) -> None:
    """Per-layer profile with permutation p-values -> ``layer_profile.csv``, ``u_shape.csv``."""
    from mlinguality.selectivity.profile import selectivity_profile

    sel = config.selectivity
    pairs = [tuple(pair.split("-")) for pair in sel.pairs] if sel.pairs else None
    controls = [tuple(pair.split("/")) for pair in sel.control_pairs or []]
    profile = selectivity_profile(
        _load(config, run_dir, controls=True),
        pairs=pairs,
        metrics=sel.metrics,
        n_permutations=sel.n_permutations,
        n_bootstrap=sel.n_bootstrap,
        seed=sel.seed,
        control_pairs=controls,
    )
    profile.layers.to_csv(run_dir / "layer_profile.csv", index=False)
    profile.u_shape.to_csv(run_dir / "u_shape.csv", index=False)


def select(config: RunConfig, run_dir: Path) -> None:
    """Language-specific neurons -> ``selectivity.csv`` (per language and layer), the masks,
    and the tidy ``selected_neurons.csv``/``.json`` (one row per lang, layer, neuron, score),
    and which languages share neurons -> ``language_overlap.csv``."""
    from safetensors.torch import save_file

    from mlinguality.selectivity.neurons import neuron_table
    from mlinguality.selectivity.overlap import language_overlap
    from mlinguality.selectivity.selection import select_language_neurons

    stats = _load(config, run_dir)
    language_overlap(stats).to_csv(run_dir / "language_overlap.csv", index=False)
    metric = config.selectivity.select_metric
    masks = select_language_neurons(stats, metric=metric, top_rate=config.selectivity.top_rate)
    write_neurons(neuron_table(masks, stats, metric), run_dir, metric, config.selectivity.top_rate)
    with (run_dir / "selectivity.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lang", "layer", "n_selected", "share_of_layer"])
        for lang, mask in masks.items():
            for layer, count in enumerate(mask.sum(dim=1).tolist()):
                writer.writerow([lang, layer, count, count / mask.shape[1]])
    tensors = {lang: mask.to(torch.uint8).contiguous() for lang, mask in masks.items()}
    save_file(tensors, str(run_dir / "selected_neurons.safetensors"))


def write_neurons(table, run_dir: Path, metric: str, top_rate: float) -> None:
    """``selected_neurons.csv`` (the tidy table) and ``selected_neurons.json`` (with metadata)."""
    from mlinguality.selectivity.neurons import SCORE_MEANING

    table.to_csv(run_dir / "selected_neurons.csv", index=False)
    record = {
        "metric": metric,
        "top_rate": top_rate,
        "score": SCORE_MEANING.get(metric, metric),
        "columns": list(table.columns),
        "neurons": _finite(table.astype(object).values.tolist()),
    }
    (run_dir / "selected_neurons.json").write_text(json.dumps(record))


def load_masks(run_dir: str | Path) -> dict[str, Bool[Tensor, "layer d_mlp"]]:
    """The masks written by :func:`select` (safetensors keeps them in sorted key order)."""
    from safetensors.torch import load_file

    path = Path(run_dir) / "selected_neurons.safetensors"
    return {lang: mask.bool() for lang, mask in load_file(str(path)).items()}


def encode_held_out(config: RunConfig, inputs):
    """The held-out examples the ablation evaluates, and their tokenized batches per language."""
    from mlinguality.ablation.evaluation import encode_languages

    ab = config.ablation
    _, _, held_out = inputs.splits
    if ab.eval_limit is not None:
        held_out = held_out.sample(ab.eval_limit, config.seed)
    encoded = encode_languages(
        inputs.model.tokenizer,
        {lang: held_out.texts(lang) for lang in config.corpus.langs},
        batch_tokens=ab.batch_tokens,
        device=config.model.device,
    )
    return held_out, encoded


def ablation_model(config: RunConfig, inputs):
    """The model the ablation evaluates: the run's, or a copy in ``ablation.dtype``."""
    from mlinguality.model import model_in_dtype

    if config.ablation.dtype is None:
        return inputs.model
    if config.model.device == "cpu" and _cpu_lacks_bf16(config.ablation.dtype):
        logger.warning(
            "ablation.dtype=%s on a CPU without bf16/fp16 matmul units (%s): on the 2-core AVX2 "
            "machine of docs/performance.md bf16 evaluations ran ~7x slower than fp32",
            config.ablation.dtype,
            torch.backends.cpu.get_cpu_capability(),
        )
    return model_in_dtype(inputs.model, config.ablation.dtype)


def _cpu_lacks_bf16(dtype: str) -> bool:
    """Whether half-precision matmuls on this CPU are emulated (AVX2 or less: no AVX-512/AMX)."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    return dtype in ("bfloat16", "float16") and not capability.startswith(("AVX512", "AMX"))


def ablate(config: RunConfig, inputs, run_dir: Path) -> None:
    """Ablation matrix on the held-out split -> ``ablation.csv``, ``ablation.json``, heatmap."""
    from mlinguality.ablation.hooks import firing_rate, mean_activation
    from mlinguality.ablation.outputs import plot_matrices, write_csv

    ab = config.ablation
    held_out, encoded = encode_held_out(config, inputs)
    langs = list(config.corpus.langs)
    saved = load_masks(run_dir)
    masks = {lang: saved[lang] for lang in langs if lang in saved}  # rows in config order
    stats = _load(config, run_dir)
    mean = mean_activation(stats) if ab.mode == "mean" else None
    activity = firing_rate(stats) if ab.activity_control else None
    meta = {"metric": config.selectivity.select_metric, "top_rate": config.selectivity.top_rate}
    if inputs.team is not None:  # torchrun: the evaluations are split across the ranks
        matrix = inputs.team.ablate(inputs, config, encoded, (masks, mean, activity, meta))
    else:
        model = ablation_model(config, inputs)
        matrix = _ablation_rows(config, model, encoded, masks, mean, activity, meta)
    baseline = matrix.baseline
    write_csv([matrix], run_dir / "ablation.csv")
    plot_matrices([matrix], run_dir / "ablation.png", ncols=1)
    dominance = matrix.dominance()
    record = {
        "mode": matrix.mode,
        "langs": langs,
        "rows": matrix.row_labels,
        "n_neurons": matrix.n_neurons,
        "n_eval_examples": len(held_out),
        "eval_tokens": {lang: loss.n_tokens for lang, loss in baseline.items()},
        "eval_bytes": {lang: loss.total_bytes for lang, loss in baseline.items()},
        "baseline_bits_per_byte": {lang: loss.bits_per_byte for lang, loss in baseline.items()},
        "bits_per_byte": _finite(matrix.bits_per_byte().tolist()),
        "delta_bits_per_byte": _finite(matrix.delta().tolist()),
        "positions": ab.positions,
        "random_deltas": {lang: matrix.random_deltas(lang) for lang in matrix.random},
        "random_activity_deltas": {
            lang: matrix.random_deltas(lang, "random_activity") for lang in matrix.random_activity
        },
        "dominance": _finite(dominance.to_dict()),
        "per_lang": _finite(dominance.per_lang),
    }
    (run_dir / "ablation.json").write_text(json.dumps(record, indent=1))


def _ablation_rows(config: RunConfig, model, encoded, masks, mean, activity, meta):
    """The ablation matrix in this process, one row (a language's neurons ablated, every
    language evaluated) per step of the progress bar."""
    from tqdm.auto import tqdm

    from mlinguality.ablation.evaluation import evaluate_languages
    from mlinguality.ablation.matrix import ablation_matrix, join_matrices

    ab = config.ablation
    with torch.no_grad():
        baseline = evaluate_languages(model, encoded)
        parts = [
            ablation_matrix(
                model,
                encoded,
                {lang: masks[lang]},
                ab.mode,
                mean=mean,
                n_seeds=ab.n_random,
                seed=config.seed,
                baseline=baseline,
                meta=meta,
                positions=ab.positions,
                activity=activity,
            )
            for lang in tqdm(masks, desc="ablation rows", unit="row")
        ]
    return join_matrices(parts, list(masks), baseline)


def _finite(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
