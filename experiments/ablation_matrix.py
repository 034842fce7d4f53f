"""Which neuron selections are language-specific when ablated? Gemma 3 270M on the Bible.

    python experiments/ablation_matrix.py --langs en,fr,ru,zh,hi --select 200 --eval 12 \\
        --metrics lape,cohens_d --rates 'lape=0.01,0.05;cohens_d=0.002,0.01' \\
        --modes zero,mean --seeds 2 --out runs/ablation

Steps (all library calls): load the corpus and split it by id hash into ``select`` and ``eval``;
collect per-language statistics on ``select`` (positions ``all``); for every selection metric x
rate x ablation mode x positions, run the ablation matrix on ``eval`` (baseline shared), with
count- and activity-matched random controls. Writes ``matrix.csv`` (every cell), ``summary.md`` (one line per configuration),
``summary.json`` and ``heatmaps.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from mlinguality import TinyModelConfig, load_model
from mlinguality.ablation.evaluation import encode_languages
from mlinguality.ablation.matrix import compare_selections
from mlinguality.ablation.outputs import comparison_table, plot_matrices, write_csv
from mlinguality.activations.collect import collect
from mlinguality.activations.stats import save_stats
from mlinguality.corpus import load_corpus


def _parse_rates(text: str) -> list[float] | dict[str, list[float]]:
    if "=" not in text:
        return [float(rate) for rate in text.split(",")]
    pairs = (part.split("=") for part in text.split(";"))
    return {metric: [float(rate) for rate in rates.split(",")] for metric, rates in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="a model spec, or 'tiny'")
    parser.add_argument("--langs", default="en,fr,ru,zh,hi")
    parser.add_argument("--books", default=None, help="Bible books, e.g. NT (default: all)")
    parser.add_argument("--select", type=int, default=200, help="verses to select neurons on")
    parser.add_argument("--eval", type=int, default=12, help="held-out verses to evaluate on")
    parser.add_argument("--max-chars", type=int, default=120, help="longest eval verse (English)")
    parser.add_argument("--metrics", default="lape,cohens_d")
    parser.add_argument(
        "--rates",
        default="lape=0.01,0.05;cohens_d=0.002,0.01",
        help="'0.002,0.01' for every metric, or per metric 'lape=0.01,0.05;cohens_d=0.002,0.01'",
    )
    parser.add_argument("--modes", default="zero,mean")
    parser.add_argument("--positions", default="skip_first", help="skip_first, all, or both")
    parser.add_argument("--seeds", type=int, default=2, help="matched random controls")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    langs = args.langs.split(",")
    start = time.perf_counter()

    model = load_model(TinyModelConfig() if args.model == "tiny" else args.model)
    corpus = load_corpus("bible", langs, books=args.books)
    select, held_out = corpus.split(eval_fraction=0.5)
    select = select.sample(args.select, seed=0)
    short = [ex for ex in held_out if len(ex.texts[langs[0]]) <= args.max_chars]
    held_out = dataclasses.replace(held_out, examples=short).sample(args.eval, seed=0)
    assert not set(select.ids) & set(held_out.ids), "select and eval must be disjoint"

    stats = collect(model, select, langs, positions="all", progress=False)
    save_stats(stats, out / "stats")
    collected = time.perf_counter()
    encoded = encode_languages(model.tokenizer, {lang: held_out.texts(lang) for lang in langs})
    matrices = compare_selections(
        model,
        encoded,
        stats,
        metrics=args.metrics.split(","),
        rates=_parse_rates(args.rates),
        modes=args.modes.split(","),
        n_seeds=args.seeds,
        positions=args.positions.split(","),
    )
    done = time.perf_counter()

    write_csv(matrices, out / "matrix.csv")
    plot_matrices(matrices, out / "heatmaps.png", ncols=4)
    table = comparison_table(matrices)
    baseline = matrices[0].baseline
    summary = {
        "args": vars(args),
        "select_verses": len(select),
        "eval_verses": len(held_out),
        "eval_tokens": {lang: loss.n_tokens for lang, loss in baseline.items()},
        "eval_bytes": {lang: loss.total_bytes for lang, loss in baseline.items()},
        "baseline_bits_per_byte": {lang: loss.bits_per_byte for lang, loss in baseline.items()},
        "seconds": {"collect": collected - start, "matrices": done - collected},
        "configs": [
            {
                **m.meta,
                "mode": m.mode,
                "positions": m.positions,
                "n_neurons": m.n_neurons,
                **m.dominance().to_dict(),
                "per_lang": m.dominance().per_lang,
            }
            for m in matrices
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(table + "\n")
    print(table)
    print(json.dumps({k: summary[k] for k in ("eval_tokens", "eval_bytes", "seconds")}))
    print(
        "baseline bits/byte:",
        {k: round(v, 3) for k, v in summary["baseline_bits_per_byte"].items()},
    )


if __name__ == "__main__":
    main()
