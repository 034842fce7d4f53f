"""The ``steer`` step: steering generation with a finished run's neurons -> ``steering/``.

Also what ``mlinguality steer RUN_DIR --from en --to fr`` runs (:mod:`mlinguality.cli.steer`).

Reads a finished run (``config.yaml``, ``stats/``, ``selected_neurons.safetensors``), takes prompts
from the held-out evaluation split (never the selection split) in each source language, cut to
their first ``prompt_words`` words, or from a prompt file, runs
:func:`mlinguality.steering.experiment.steering_experiment` and writes ``RUN_DIR/steering/``:

- ``steering.csv``: one row per generation (pair, condition, alpha, prompt, text, language,
  outcome, bits per byte, distinct bigrams);
- ``steering_summary.csv``: shares of target / source / other language, fluency and repetition
  per pair, condition and alpha, with the identifier's accuracy on corpus text beside them;
- ``identifier.csv``: the identifier's accuracy on unsteered held-out text per language (whole
  verses, and verses cut to about the generated length);
- ``steering_alpha.png``, ``steering_heatmap.png``, ``steering.json`` (settings and headline).

With ``steering.directions: true`` the same tables also hold the language-direction rows
(``method`` ``direction`` and ``random-direction``, one ``layer`` each: the difference of mean
``resid_post`` of target and source text over the *selection* split, at collection's positions,
added with ``direction_alphas``), beside the neuron rows (``neurons``, ``random-neurons``), and
the folder gets ``direction_means.safetensors`` (each language's mean residual at the swept
layers) and ``steering_methods.png`` (target share against alpha and against bits per byte, per
method). With it false the rows are neuron steering's alone, as before.

A prompt file has one prompt per line; ``lang<TAB>prompt`` lines give the language, untagged
lines are used for every source language.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mlinguality.errors import MlingualityError
from mlinguality.run.config import RunConfig
from mlinguality.run.inputs import StageContext
from mlinguality.steering.config import SteeringConfig

logger = logging.getLogger(__name__)

OUTPUT = "steering"  # the stage's folder inside a run folder


def steering_pairs(config: RunConfig) -> list[tuple[str, str]]:
    """``steering.pairs`` (``"en-fr"``), or every ordered pair of the corpus languages."""
    langs = list(config.corpus.langs)
    if config.steering.pairs is None:
        return [(a, b) for a in langs for b in langs if a != b]
    pairs = [tuple(pair.split("-")) for pair in config.steering.pairs]
    for pair in pairs:
        missing = [lang for lang in pair if lang not in langs]
        if missing:
            raise MlingualityError(f"steering.pairs: {missing[0]!r} is not in corpus.langs")
    return pairs  # type: ignore[return-value]


def read_prompt_file(path: str | Path, sources: list[str]) -> dict[str, list[str]]:
    """Prompts per source language from a file (``lang<TAB>prompt`` or untagged lines)."""
    path = Path(path)
    if not path.exists():
        raise MlingualityError(f"prompt file {path}: no such file")
    prompts: dict[str, list[str]] = {lang: [] for lang in sources}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        lang, tab, text = line.partition("\t")
        if not tab:
            for source in sources:
                prompts[source].append(line.strip())
        elif lang in prompts and text.strip():
            prompts[lang].append(text.strip())
        elif not text.strip():
            raise MlingualityError(f"prompt file {path}:{number}: empty prompt")
    empty = [lang for lang, texts in prompts.items() if not texts]
    if empty:
        raise MlingualityError(f"prompt file {path}: no prompt for source language {empty[0]!r}")
    return prompts


def held_out_texts(config: RunConfig, held_out, n: int) -> dict[str, list[str]]:
    """The first ``n`` held-out examples per language (a seeded sample of the eval split)."""
    chosen = held_out.sample(min(n, len(held_out)), config.seed)
    return {lang: chosen.texts(lang) for lang in config.corpus.langs}


def identifier_accuracy(identifier, texts: dict[str, list[str]], tokenizer, n_tokens: int):
    """Accuracy per language on whole held-out texts and on texts cut to ``n_tokens`` tokens."""
    cut = {
        lang: [
            tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"][:n_tokens])
            for t in lang_texts
        ]
        for lang, lang_texts in texts.items()
    }
    whole, short = identifier.accuracy(texts), identifier.accuracy(cut)
    return [
        {"lang": lang, "n": len(texts[lang]), "accuracy": whole[lang], "accuracy_cut": short[lang]}
        for lang in texts
    ], short


def run_steering(
    config: RunConfig,
    run_dir: Path,
    model,
    held_out,
    *,
    prompts_file: str | Path | None = None,
    out_dir: Path | None = None,
    selection=None,
) -> Path:
    """Run the steering experiment of ``config.steering`` on a finished run; return its folder.

    ``selection`` (the selection split) is needed with ``steering.directions``: the directions'
    mean residuals come from it, never from the held-out prompts."""
    from mlinguality.activations.stats import load_stats
    from mlinguality.run.steps.select import load_masks
    from mlinguality.steering.experiment import steering_experiment, summarize, write_rows
    from mlinguality.steering.language_id import LanguageIdentifier, first_words
    from mlinguality.steering.plots import plot_alpha, plot_heatmap, plot_methods

    cfg = config.steering
    pairs = steering_pairs(config)
    sources = list(dict.fromkeys(source for source, _ in pairs))
    stats = load_stats(run_dir / "stats", list(config.corpus.langs))
    masks = load_masks(run_dir)
    warn_empty_languages(masks, pairs, cfg)
    texts = held_out_texts(config, held_out, cfg.n_prompts)
    if prompts_file is not None:
        prompts = read_prompt_file(prompts_file, sources)
    else:
        prompts = {
            lang: [first_words(t, cfg.prompt_words) for t in texts[lang]] for lang in sources
        }
    identifier = LanguageIdentifier()
    accuracy_rows, accuracy = identifier_accuracy(
        identifier, texts, model.tokenizer, cfg.max_new_tokens
    )
    start = time.perf_counter()

    def progress(done, total, label):
        logger.info("steering %d/%d: %s (%.0f s)", done, total, label, time.perf_counter() - start)

    rows = steering_experiment(
        model, stats, masks, prompts, pairs, cfg, identifier, progress=progress, seed=config.seed
    )
    out = out_dir or run_dir / OUTPUT
    if cfg.directions:
        rows += _direction_rows(config, model, selection, prompts, pairs, identifier, progress, out)
    summary = summarize(rows, accuracy)
    write_rows(rows, out / "steering.csv")
    write_rows(summary, out / "steering_summary.csv")
    write_rows(accuracy_rows, out / "identifier.csv")
    alpha = heatmap_alpha(cfg)
    if config.plots:
        control = "activity-matched random" if cfg.activity_control else "count-matched random"
        plot_alpha(summary, out / "steering_alpha.png", control)
        plot_heatmap(summary, alpha, out / "steering_heatmap.png")
        if cfg.directions:
            plot_methods(summary, out / "steering_methods.png")
    record = {
        "settings": config.steering.to_dict(),
        "pairs": [f"{s}-{t}" for s, t in pairs],
        "n_prompts": {lang: len(p) for lang, p in prompts.items()},
        "prompts": "file" if prompts_file else f"held-out, first {cfg.prompt_words} words",
        "seconds": round(time.perf_counter() - start, 1),
        "headline": headline(summary, alpha)
        | (direction_headline(summary, cfg, model.cfg.n_layers) if cfg.directions else {}),
        "identifier_accuracy_cut": {k: (v if v == v else None) for k, v in accuracy.items()},
    }
    (out / "steering.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return out


def _direction_rows(config: RunConfig, model, selection, prompts, pairs, identifier, progress, out):
    """The direction and random-direction rows; each language's mean residuals saved in ``out``."""
    from safetensors.torch import save_file

    from mlinguality.steering.direction_experiment import direction_experiment, direction_layers
    from mlinguality.steering.directions import language_means

    if selection is None:
        raise MlingualityError("steering.directions needs the selection split (selection=...)")
    layers = direction_layers(config.steering, model.cfg.n_layers)
    langs = list(dict.fromkeys(lang for pair in pairs for lang in pair))
    started = time.perf_counter()
    means = language_means(
        model,
        selection,
        langs,
        layers,
        positions=config.collection.positions,
        include_bos=config.collection.include_bos,
        batch_tokens=config.collection_batch_tokens,
    )
    logger.info(
        "steering: mean residuals of %s at layers %s (%.0f s)",
        ", ".join(langs),
        layers,
        time.perf_counter() - started,
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {lang: m.mean.contiguous() for lang, m in means.items()},
        str(out / "direction_means.safetensors"),
        metadata={
            "layers": json.dumps(layers),
            "n_tokens": json.dumps({lang: m.n_tokens for lang, m in means.items()}),
            "hook": "blocks.{L}.hook_resid_post",
            "positions": config.collection.positions,
        },
    )
    return direction_experiment(
        model, means, prompts, pairs, config.steering, identifier, progress, seed=config.seed
    )


def warn_empty_languages(masks, pairs: list[tuple[str, str]], cfg: SteeringConfig) -> list[str]:
    """One warning line per language with 0 selected neurons that a pair steers from (its
    neurons deactivated) or towards (activated): those pairs do half an intervention."""
    lines = []
    for lang in dict.fromkeys(lang for pair in pairs for lang in pair):
        if lang in masks and int(masks[lang].sum()) > 0:
            continue
        roles = []
        away = [f"{s}->{t}" for s, t in pairs if s == lang]
        towards = [f"{s}->{t}" for s, t in pairs if t == lang]
        if away and cfg.deactivate is not None:
            roles.append(f"steering away from it ({', '.join(away)}) deactivates nothing")
        if towards and cfg.activate is not None:
            roles.append(f"steering towards it ({', '.join(towards)}) activates nothing")
        if roles:
            lines.append(
                f"steering: {lang!r} has 0 selected neurons: {' and '.join(roles)} (only the "
                "other language's neurons are steered); raise selectivity.top_rate to select some"
            )
    for line in lines:
        logger.warning(line)
    return lines


def steer(ctx: StageContext) -> None:
    """The runner's ``steer`` stage: :func:`run_steering` on the run's own model and split."""
    _, select, held_out = ctx.inputs.splits
    run_steering(ctx.config, ctx.run_dir, ctx.inputs.model, held_out, selection=select)


def heatmap_alpha(cfg: SteeringConfig) -> float:
    """The alpha of the heatmap and headline: 1.0 when swept, else the largest."""
    return 1.0 if 1.0 in cfg.alphas else max(cfg.alphas)


def headline(summary: list[dict], alpha: float) -> dict[str, float | None]:
    """Mean target share over pairs: unsteered, steered at ``alpha``, random control at ``alpha``."""

    def mean(condition: str, key: str, at: float | None) -> float | None:
        values = [
            row[key]
            for row in summary
            if row["condition"] == condition and (at is None or row["alpha"] == at)
        ]
        values = [v for v in values if v == v]
        return sum(values) / len(values) if values else None

    return {
        "alpha": alpha,
        "share_target_none": mean("none", "share_target", None),
        "share_target_steer": mean("steer", "share_target", alpha),
        "share_target_random": mean("random", "share_target", alpha),
        "bits_per_byte_none": mean("none", "bits_per_byte", None),
        "bits_per_byte_steer": mean("steer", "bits_per_byte", alpha),
        "bits_per_byte_random": mean("random", "bits_per_byte", alpha),
        "line_pass_rate_none": mean("none", "line_pass_rate", None),
        "line_pass_rate_steer": mean("steer", "line_pass_rate", alpha),
        "line_pass_rate_random": mean("random", "line_pass_rate", alpha),
    }


def direction_headline(summary: list[dict], cfg: SteeringConfig, n_layers: int) -> dict:
    """Per swept layer, mean over pairs at the direction alpha (1.0 when swept, else the
    largest): target share, LCB line-level pass rate and bits per byte of the direction and of
    the random direction (``share_target_direction_L6``, ``share_target_random_direction_L6``,
    ...)."""
    from mlinguality.steering.direction_experiment import direction_alphas, direction_layers

    alphas = direction_alphas(cfg)
    alpha = 1.0 if 1.0 in alphas else max(alphas)
    out: dict[str, float | None] = {"direction_alpha": alpha}
    for layer in direction_layers(cfg, n_layers):
        for condition in ("direction", "random-direction"):
            chosen = [
                row
                for row in summary
                if row["condition"] == condition
                and row["alpha"] == alpha
                and row.get("layer") == layer
            ]
            for key in ("share_target", "line_pass_rate", "bits_per_byte"):
                values = [row[key] for row in chosen if row[key] == row[key]]
                name = f"{key}_{condition.replace('-', '_')}_L{layer}"
                out[name] = sum(values) / len(values) if values else None
    return out
