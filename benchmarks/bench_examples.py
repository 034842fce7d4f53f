"""Benchmark the examples stage against collection on the same selection split (one process).

    python benchmarks/bench_examples.py --verses 400 --limit 48 --threads 2

The main job's setting: 400 aligned verses split in half, collection over the selection split
in corpus.langs plus the control (en:WEB), LAPE neurons at top rate 1% plus one
activity-matched random set per language, the examples stage's cards on a sample of ``--limit``
verses per language. Prints collection's and the examples stage's seconds and their ratio
(goal <= 0.3x; docs/performance.md keeps the last table). ``--model random:...`` works as in
benchmarks/common.py (speed only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from mlinguality.ablation.random_sets import firing_rate, random_matched_mask
from mlinguality.activations.collect import collect
from mlinguality.dashboards.cards import NeuronSpec, build_cards
from mlinguality.dashboards.contexts import pass_batch_tokens
from mlinguality.dashboards.token_language import token_languages
from mlinguality.selectivity.selection import select_language_neurons

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_model_and_corpus, load_bench_corpus, load_bench_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_corpus(parser)
    parser.add_argument("--langs", default="en,fr,de,ru,hi")
    parser.add_argument("--verses", type=int, default=400)
    parser.add_argument("--limit", type=int, default=48, help="examples.limit")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    model = load_bench_model(args.model)
    corpus = load_bench_corpus(args.corpus, [*langs, "en:WEB"], args.verses)
    select, _ = corpus.split(0.5)
    start = time.perf_counter()
    stats = collect(model, select, [*langs, "en:WEB"], batch_tokens=4096)
    collect_s = time.perf_counter() - start
    stats = {lang: stats[lang] for lang in langs}
    masks = select_language_neurons(stats, "lape", top_rate=0.01)
    activity = firing_rate(stats)
    specs = [
        NeuronSpec(layer, neuron, "selected", lang, 0.0)
        for lang, mask in masks.items()
        for layer, neuron in mask.nonzero().tolist()
    ]
    for index, (lang, mask) in enumerate(masks.items()):
        generator = torch.Generator().manual_seed(index)
        random = random_matched_mask(mask, generator, activity=activity)
        specs += [NeuronSpec(a, b, "random", lang) for a, b in random.nonzero().tolist()]
    start = time.perf_counter()
    sample = select.sample(args.limit, 0)
    table = token_languages(
        model.tokenizer, {lang: select.texts(lang) for lang in langs}, vocab_size=model.cfg.d_vocab
    )
    build_cards(
        model,
        {lang: sample.texts(lang) for lang in langs},
        specs,
        stats,
        example_ids=list(sample.ids),
        token_table=table,
        batch_tokens=pass_batch_tokens("cpu", 4096),
    )
    examples_s = time.perf_counter() - start
    print("| verses | limit | neurons | collect s | examples s | ratio (goal <= 0.3) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(select)} | {len(sample)} | {len(specs)} | {collect_s:.1f} | {examples_s:.1f} "
        f"| {examples_s / collect_s:.2f}x |"
    )


if __name__ == "__main__":
    main()
