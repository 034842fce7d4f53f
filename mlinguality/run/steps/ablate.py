"""The ``ablate`` step: the ablation matrix on the held-out split -> ``ablation.csv``,
``ablation.json`` (the report draws its heatmap, ``ablation.png``, when plots are on)."""

from __future__ import annotations

import json
import logging

import torch

from mlinguality.files import json_safe
from mlinguality.run.config import RunConfig
from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats
from mlinguality.run.steps.select import load_masks

logger = logging.getLogger(__name__)


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


def ablate(ctx: StageContext) -> None:
    """Ablation matrix on the held-out split -> ``ablation.csv``, ``ablation.json``."""
    from mlinguality.ablation.hooks import mean_activation
    from mlinguality.ablation.outputs import write_csv
    from mlinguality.ablation.random_sets import firing_rate

    config, inputs, run_dir = ctx.config, ctx.inputs, ctx.run_dir
    ab = config.ablation
    held_out, encoded = encode_held_out(config, inputs)
    langs = list(config.corpus.langs)
    saved = load_masks(run_dir)
    masks = {lang: saved[lang] for lang in langs if lang in saved}  # rows in config order
    stats = load_run_stats(config, run_dir)
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
        "bits_per_byte": json_safe(matrix.bits_per_byte().tolist()),
        "delta_bits_per_byte": json_safe(matrix.delta().tolist()),
        "positions": ab.positions,
        "random_deltas": {lang: matrix.random_deltas(lang) for lang in matrix.random},
        "random_activity_deltas": {
            lang: matrix.random_deltas(lang, "random_activity") for lang in matrix.random_activity
        },
        "dominance": json_safe(dominance.to_dict()),
        "per_lang": json_safe(dominance.per_lang),
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
                log=False,
            )
            for lang in tqdm(masks, desc="ablation rows", unit="row")
        ]
    return join_matrices(parts, list(masks), baseline)
