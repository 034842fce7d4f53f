"""The ``examples`` step: a card per neuron -> ``neurons/`` (``neurons.json``, the
output-language test ``output_language.csv``, the token-language table ``token_languages.csv``).

The neurons: every selected neuron; ``examples.n_random`` activity-matched random sets per
language (the same count per layer, drawn from the same firing-rate bins, as the ablation's
control); and ``examples.neurons``. The texts: a seeded sample of ``examples.limit`` examples of
the selection split (the data the neurons were selected on), counted at collection's positions.
The token-language table counts the whole selection split. ``neurons.html`` is written from
``neurons.json`` by the report (:mod:`mlinguality.run.report`).
"""

from __future__ import annotations

import csv
import json

import torch

from mlinguality.errors import MlingualityError
from mlinguality.files import json_safe
from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.collect import load_run_stats
from mlinguality.run.steps.select import load_masks

OUTPUT = "neurons"  # the stage's folder inside a run folder


def neuron_specs(ctx: StageContext, stats) -> list:
    """Selected, activity-matched random and listed neurons, in that order (no duplicates)."""
    import pandas as pd

    from mlinguality.ablation.random_sets import firing_rate, random_matched_mask
    from mlinguality.dashboards.cards import NeuronSpec
    from mlinguality.dashboards.config import parse_neuron

    config, run_dir = ctx.config, ctx.run_dir
    table = pd.read_csv(run_dir / "selected_neurons.csv")
    specs = [
        NeuronSpec(int(r.layer), int(r.neuron), "selected", str(r.lang), float(r.score))
        for r in table.itertuples()
    ]
    masks = load_masks(run_dir)
    activity = firing_rate(stats)
    for draw in range(config.examples.n_random):
        for index, lang in enumerate(config.corpus.langs):
            if lang not in masks:
                continue
            generator = torch.Generator().manual_seed(config.seed * 1000 + draw * 100 + index)
            random = random_matched_mask(masks[lang], generator, activity=activity)
            specs += [
                NeuronSpec(layer, neuron, "random", lang)
                for layer, neuron in random.nonzero().tolist()
            ]
    n_layers, d_mlp = masks[next(iter(masks))].shape if masks else (None, None)
    for text in config.examples.neurons:
        layer, neuron = parse_neuron(text)
        if n_layers is not None and not (layer < n_layers and neuron < d_mlp):
            raise MlingualityError(
                f"examples.neurons: {text} is outside the model's {n_layers} layers x {d_mlp}"
            )
        specs.append(NeuronSpec(layer, neuron, "listed"))
    return specs


def examples(ctx: StageContext) -> None:
    """Cards of the selected, random and listed neurons -> ``neurons/``."""
    from mlinguality.dashboards.cards import build_cards, output_language
    from mlinguality.dashboards.contexts import pass_batch_tokens
    from mlinguality.dashboards.token_language import token_languages

    config, inputs, run_dir = ctx.config, ctx.inputs, ctx.run_dir
    ex = config.examples
    langs = list(config.corpus.langs)
    _, select, _ = inputs.splits
    stats = load_run_stats(config, run_dir)
    specs = neuron_specs(ctx, stats)
    model = inputs.model
    sample = select if ex.limit is None else select.sample(ex.limit, config.seed)
    table = token_languages(
        model.tokenizer,
        {lang: select.texts(lang) for lang in langs},
        vocab_size=model.cfg.d_vocab,
    )
    cards = build_cards(
        model,
        {lang: sample.texts(lang) for lang in langs},
        specs,
        stats,
        example_ids=list(sample.ids),
        top_k=ex.top_k,
        window=ex.window,
        positions=config.collection.positions,
        include_bos=config.collection.include_bos,
        batch_tokens=pass_batch_tokens(config.model.device, config.collection_batch_tokens),
        token_table=table,
    )
    out = run_dir / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "run": run_dir.name,
        "model": config.model.spec,
        "langs": langs,
        "metric": config.selectivity.select_metric,
        "top_k": ex.top_k,
        "n_examples": len(sample),
        "token_languages": {"margin": table.margin, "min_count": table.min_count, **table.sizes()},
        "neurons": [card.data for card in cards],
    }
    (out / "neurons.json").write_text(json.dumps(json_safe(record), ensure_ascii=False))
    output_language(cards).to_csv(out / "output_language.csv", index=False)
    _write_token_table(table, model.tokenizer, out / "token_languages.csv")


def _write_token_table(table, tokenizer, path) -> None:
    """One row per token seen in the corpus: id, text, language (empty: unassigned), counts."""
    assigned = table.assigned
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["token_id", "token", "lang", *[f"n_{lang}" for lang in table.langs]])
        for token_id in table.in_corpus.nonzero().flatten().tolist():
            lang = table.langs[int(assigned[token_id])] if assigned[token_id] >= 0 else ""
            counts = table.counts[:, token_id].tolist()
            writer.writerow([token_id, tokenizer.decode([token_id]), lang, *counts])
