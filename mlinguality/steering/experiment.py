"""Stage 6d: the steering experiment: for each (source, target) pair, generate from source-language
prompts with and without the intervention, and measure what comes out.

Conditions per pair, on the same prompts (greedy, or sampled with the same seeds):

- ``none``: no intervention (one generation per source, scored against every target);
- ``steer``: :func:`~mlinguality.steering.interventions.language_intervention` at each ``alpha``;
- ``random``: the same intervention on random neurons matched to the selected ones in count per
  layer and, with ``activity_control`` (the default), in firing-rate decile on the selection
  data (:func:`mlinguality.ablation.random_sets.random_matched_mask`), ``n_random`` draws per alpha.

Each generation is scored by an offline identifier (target / source / other), line by line
for the Language Confusion Benchmark's line-level pass (every judged line in the target
language: :func:`mlinguality.steering.language_id.line_languages`), by its fluency (bits per
byte of the generated text, BOS first, under the *unsteered* model, as in
:mod:`mlinguality.ablation.evaluation`) and by its distinct token bigrams (1 - repetition).
:func:`summarize` averages them per pair, condition, alpha (and layer, for directions).

The rows are the shared table of every steering method (:func:`result_rows`): the ``method``
column says ``none``, ``neurons``, ``random-neurons``, or, from
:func:`mlinguality.steering.direction_experiment.direction_experiment`, ``direction`` and
``random-direction``.
"""

from __future__ import annotations

import csv
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from mlinguality.ablation.evaluation import encode_texts, evaluate
from mlinguality.ablation.random_sets import firing_rate, random_matched_mask
from mlinguality.activations.stats import ActivationStats
from mlinguality.choices import SteeringMethod
from mlinguality.errors import MlingualityError
from mlinguality.steering.config import SteeringConfig
from mlinguality.steering.direction_hooks import DirectionHooks
from mlinguality.steering.generation import Generations, generate
from mlinguality.steering.interventions import (
    Intervention,
    SteeringHooks,
    language_intervention,
    steering_hooks,
)
from mlinguality.steering.language_id import (
    LanguageIdentifier,
    distinct_n,
    line_languages,
    line_pass,
    outcome,
)
from mlinguality.types import LayerNeuron, NeuronMask

logger = logging.getLogger(__name__)

CONDITIONS = ("none", "steer", "random")
# The method of each condition: what the tables' `method` column says. The direction experiment
# (mlinguality.steering.direction_experiment) adds its conditions under their own names.
METHODS: dict[str, SteeringMethod] = {
    "none": "none",
    "steer": "neurons",
    "random": "random-neurons",
    "direction": "direction",
    "random-direction": "random-direction",
}


# n of the distinct-n-gram rate (1 - repetition) of each generation
DISTINCT = 2


def control_seed(seed: int, *parts) -> int:
    """A seed for one random control, from the run's ``seed`` and what the control is of."""
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % 2**31


def text_bits_per_byte(model, texts: Sequence[str], batch_tokens: int = 512) -> list[float]:
    """Bits per byte of each text (BOS first) under ``model`` as it is now; NaN for an empty one."""
    out = [math.nan] * len(texts)
    chosen = [i for i, text in enumerate(texts) if text.strip()]
    if not chosen:
        return out
    encoded = encode_texts(model.tokenizer, [texts[i] for i in chosen], batch_tokens=batch_tokens)
    loss = evaluate(model, encoded)
    for i, nll, n_bytes in zip(chosen, loss.text_nll.tolist(), loss.n_bytes.tolist(), strict=True):
        out[i] = nll / math.log(2) / max(n_bytes, 1)
    return out


def score_generations(
    model,
    generations: Generations,
    identifier: LanguageIdentifier,
) -> list[dict]:
    """Language, probability, fluency, repetition and per-line languages of each generation
    (call it with no steering hooks active: fluency is the unsteered model's)."""
    bpb = text_bits_per_byte(model, generations.texts)
    rows = []
    for i, text in enumerate(generations.texts):
        lang, probability = identifier.classify(text)
        rows.append(
            {
                "prompt_index": i,
                "prompt": generations.prompts[i],
                "text": text,
                "lang": lang,
                "lang_prob": round(probability, 4),
                "n_new_tokens": len(generations.new_ids[i]),
                "stopped": generations.stopped[i],
                "bits_per_byte": bpb[i],
                f"distinct_{DISTINCT}": distinct_n(generations.new_ids[i], DISTINCT),
                "line_langs": " ".join(line_languages(identifier, text)),
            }
        )
    return rows


def result_rows(
    source: str,
    target: str,
    condition: str,
    alpha: float,
    draw: int,
    scored: Sequence[dict],
    *,
    n_neurons: int = 0,
    layer: int | None = None,
    direction_norm: float | None = None,
) -> list[dict]:
    """The table rows of one generation run (one per prompt), in the columns every steering
    method shares: ``method`` names it (:data:`METHODS`), ``layer`` and ``direction_norm`` are
    the direction's (``None`` for neurons), ``outcome`` and ``line_pass`` (LCB's line-level pass,
    :func:`~mlinguality.steering.language_id.line_pass`) are judged against ``target``."""
    return [
        {
            "source": source,
            "target": target,
            "condition": condition,
            "method": METHODS[condition],
            "alpha": alpha,
            "layer": layer,
            "draw": draw,
            "n_neurons": n_neurons,
            "direction_norm": direction_norm,
            **row,
            "outcome": outcome(row["lang"], source, target),
            "line_pass": line_pass(row["line_langs"].split(), target),
        }
        for row in scored
    ]


def generate_prompts(
    model,
    prompts,
    settings: SteeringConfig,
    hooks: SteeringHooks | DirectionHooks | None,
    seed: int,
) -> Generations:
    """:func:`~mlinguality.steering.generation.generate` with the settings' decoding options."""
    return generate(
        model,
        prompts,
        max_new_tokens=settings.max_new_tokens,
        hooks=hooks,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        seed=seed,
        batch_size=settings.batch_size,
    )


def _generate(
    model, prompts, settings: SteeringConfig, intervention: Intervention | None, seed: int
) -> Generations:
    hooks = None
    if intervention is not None:
        hooks = steering_hooks(model, intervention, settings.positions)
    return generate_prompts(model, prompts, settings, hooks, seed)


def random_intervention(
    stats: Mapping[str, ActivationStats],
    masks: Mapping[str, NeuronMask],
    source: str,
    target: str,
    settings: SteeringConfig,
    generator: torch.Generator,
    activity: LayerNeuron | None = None,
) -> Intervention:
    """The pair's intervention on random neurons: each side's set replaced by a random set
    matched in count per layer (and in ``activity`` bins when given), moved to the same kind of
    target values."""
    options = {} if activity is None else {"activity": activity}
    fake = {
        lang: random_matched_mask(masks[lang], generator, **options) for lang in (source, target)
    }
    intervention = language_intervention(
        stats,
        fake,
        source,
        target,
        deactivate=settings.deactivate,
        activate=settings.activate,
        quantile=settings.quantile,
    )
    intervention.label = "random " + intervention.label
    return intervention


def steering_experiment(
    model,
    stats: Mapping[str, ActivationStats],
    masks: Mapping[str, NeuronMask],
    prompts: Mapping[str, Sequence[str]],
    pairs: Sequence[tuple[str, str]],
    settings: SteeringConfig | None = None,
    identifier: LanguageIdentifier | None = None,
    progress=None,
    seed: int = 0,
) -> list[dict]:
    """One row per (pair, condition, alpha, random draw, prompt): see the module docstring.

    Args:
        model: The model the statistics and masks come from.
        stats: Per-language statistics (selection split).
        masks: Per-language selected neurons.
        prompts: Source-language prompts per source language.
        pairs: ``(source, target)`` pairs.
        settings: Generation and intervention settings (the ``steering`` section of a run
            config; ``enabled``, ``pairs``, ``n_prompts`` and ``prompt_words`` are the
            runner's and are not read here).
        identifier: Language identifier (default: py3langid over all its languages).
        progress: Optional callable ``(done, total, label)`` called after each generation run.
        seed: Sampling and random-control seed (a run passes its ``seed``).
    """
    settings = settings or SteeringConfig()
    identifier = identifier or LanguageIdentifier()
    for source, target in pairs:
        if source == target:
            raise MlingualityError(f"steering pair {source}->{target}: same language")
        if source not in prompts or not prompts[source]:
            raise MlingualityError(f"steering: no prompts for source language {source!r}")
    activity = firing_rate(stats) if settings.activity_control and settings.n_random else None
    sources = list(dict.fromkeys(source for source, _ in pairs))
    per_pair = len(settings.alphas) * (1 + settings.n_random)
    total, done = len(sources) + len(pairs) * per_pair, 0
    rows: list[dict] = []

    def record(source, target, condition, alpha, draw, n_neurons, scored):
        rows.extend(
            result_rows(source, target, condition, alpha, draw, scored, n_neurons=n_neurons)
        )

    def tick(label):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    for source in sources:
        source_prompts = list(prompts[source])
        base = score_generations(
            model, _generate(model, source_prompts, settings, None, seed), identifier
        )
        tick(f"{source} none")
        for src, target in pairs:
            if src == source:
                record(source, target, "none", 0.0, 0, 0, base)
        for src, target in pairs:
            if src != source:
                continue
            chosen = language_intervention(
                stats,
                masks,
                source,
                target,
                deactivate=settings.deactivate,
                activate=settings.activate,
                quantile=settings.quantile,
            )
            for alpha in settings.alphas:
                out = _generate(model, source_prompts, settings, chosen.with_alpha(alpha), seed)
                record(
                    source,
                    target,
                    "steer",
                    alpha,
                    0,
                    chosen.n_neurons,
                    score_generations(model, out, identifier),
                )
                tick(f"{source}->{target} steer alpha={alpha}")
                for draw in range(settings.n_random):
                    generator = torch.Generator().manual_seed(
                        control_seed(seed, source, target, draw)
                    )
                    control = random_intervention(
                        stats, masks, source, target, settings, generator, activity
                    )
                    out = _generate(
                        model, source_prompts, settings, control.with_alpha(alpha), seed
                    )
                    record(
                        source,
                        target,
                        "random",
                        alpha,
                        draw,
                        control.n_neurons,
                        score_generations(model, out, identifier),
                    )
                    tick(f"{source}->{target} random alpha={alpha}")
    return rows


def _mean(values) -> float:
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else math.nan


def summarize(
    rows: Sequence[dict], accuracy: Mapping[str, float] | None = None, distinct: int = DISTINCT
) -> list[dict]:
    """Per (source, target, condition, alpha, layer): outcome shares, the Language Confusion
    Benchmark's line-level pass rate (share of responses whose every judged line is in the
    target language), mean fluency and repetition, and the identifier's accuracy on unsteered
    corpus text of the source and target languages.

    ``method`` (:data:`METHODS`) puts neuron and direction steering side by side; ``layer`` and
    ``direction_norm`` are the direction's (``None`` for the neuron rows)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["source"], row["target"], row["condition"], row["alpha"], row.get("layer"))
        groups.setdefault(key, []).append(row)
    accuracy = accuracy or {}
    summary = []
    for (source, target, condition, alpha, layer), group in groups.items():
        n = len(group)
        norms = [row["direction_norm"] for row in group if row.get("direction_norm") is not None]
        summary.append(
            {
                "source": source,
                "target": target,
                "condition": condition,
                "method": METHODS[condition],
                "alpha": alpha,
                "layer": layer,
                "n": n,
                "n_neurons": _mean([row["n_neurons"] for row in group]),
                "direction_norm": _mean(norms) if norms else None,
                **{
                    f"share_{kind}": sum(row["outcome"] == kind for row in group) / n
                    for kind in ("target", "source", "other")
                },
                "line_pass_rate": sum(bool(row["line_pass"]) for row in group) / n,
                "n_empty": sum(not row["text"].strip() for row in group),
                "bits_per_byte": _mean([row["bits_per_byte"] for row in group]),
                f"distinct_{distinct}": _mean([row[f"distinct_{distinct}"] for row in group]),
                "mean_new_tokens": _mean([row["n_new_tokens"] for row in group]),
                "id_accuracy_source": accuracy.get(source, math.nan),
                "id_accuracy_target": accuracy.get(target, math.nan),
            }
        )
    return summary


def write_rows(rows: Sequence[dict], path: str | Path) -> Path:
    """Write dict rows as CSV (columns of the first row)."""
    if not rows:
        raise MlingualityError(f"{path}: nothing to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


__all__ = [
    "CONDITIONS",
    "DISTINCT",
    "METHODS",
    "SteeringConfig",
    "control_seed",
    "generate_prompts",
    "random_intervention",
    "result_rows",
    "score_generations",
    "steering_experiment",
    "summarize",
    "text_bits_per_byte",
    "write_rows",
]
