"""Per-layer language selectivity of Gemma 3 270M on Bible verses, and the U-shape test.

    MLINGUALITY_CACHE=/tmp/mlcache HF_HUB_OFFLINE=1 .venv/bin/python \\
        experiments/selectivity_profile.py --langs en,fr,de,ru,zh,hi --verses 300

Collects per-example statistics (cached in ``--out``/stats; reruns reuse them), computes the
profile with permutation p-values and bootstrap intervals, writes ``layer_profile.csv`` and
``u_shape.csv`` to ``--out``, PNG plots to ``--img``, and prints Markdown tables for
docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from mlinguality.activations.stats import load_stats, save_stats
from mlinguality.selectivity.plots import plot_layer_profile, plot_profile_grid
from mlinguality.selectivity.profile import SelectivityProfile, selectivity_profile
from mlinguality.selectivity.selection import select_language_neurons


def collect_stats(args: argparse.Namespace, langs: list[str], stats_dir: Path) -> dict:
    from mlinguality import load_model
    from mlinguality.activations.collect import collect
    from mlinguality.corpus import load_corpus

    corpus = load_corpus("bible", langs, limit=args.verses, seed=args.seed)
    model = load_model("gemma-3-270m")
    start = time.perf_counter()
    stats = collect(
        model,
        corpus,
        langs,
        positions="all",
        per_example=True,
        checkpoint_dir=stats_dir.parent / "checkpoint",
        progress=False,
    )
    elapsed = time.perf_counter() - start
    tokens = sum(s.n_tokens for s in stats.values())
    print(f"collected {tokens} tokens in {elapsed:.0f} s ({tokens / elapsed:.0f} tokens/s)")
    save_stats(stats, stats_dir)
    return stats


def markdown_u_table(u_shape) -> str:
    lines = [
        "| metric | pair | U | 95% CI | U first / last quarter | permutation p | null U | "
        "U of excess over null [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in u_shape.itertuples():
        lines.append(
            f"| {row.metric} | {row.pair} | {row.u:.2f} | [{row.ci_low:.2f}, {row.ci_high:.2f}] | "
            f"{row.u_first:.2f} / {row.u_last:.2f} | {row.p_value:.3g} | {row.null_u_mean:.2f} | "
            f"{row.u_excess:.2f} [{row.excess_ci_low:.2f}, {row.excess_ci_high:.2f}] |"
        )
    return "\n".join(lines)


def markdown_layer_table(layers, metric: str) -> str:
    rows = layers[layers.metric == metric]
    wide = rows.pivot(index="layer", columns="pair", values="value")
    pairs = list(wide.columns)
    lines = [f"| layer | {' | '.join(pairs)} |", "|---" * (len(pairs) + 1) + "|"]
    for layer, values in wide.iterrows():
        lines.append(f"| {layer} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def plot_all(profile: SelectivityProfile, img: Path, title: str) -> None:
    plot_profile_grid(profile, img / "selectivity_profile_grid.png", title=title)
    for metric in ("cohens_d", "topk", "rank_corr"):
        plot_layer_profile(profile, metric, img / f"selectivity_{metric}.png", title=title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,fr,de,ru,zh,hi")
    parser.add_argument("--verses", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--out", default="runs/selectivity_profile")
    parser.add_argument("--img", default="docs/img")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the plots from --out's CSV files"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    out = Path(args.out)
    if args.replot:
        profile = SelectivityProfile(
            pd.read_csv(out / "layer_profile.csv"), pd.read_csv(out / "u_shape.csv")
        )
        plot_all(
            profile,
            Path(args.img),
            f"Gemma 3 270M, Bible, {args.verses} verses, "
            f"positions=all, {args.permutations} permutations",
        )
        return
    stats_dir = out / "stats"
    if all((stats_dir / f"{lang}.safetensors").exists() for lang in langs):
        stats = load_stats(stats_dir, langs)
        print(f"loaded stats from {stats_dir}")
    else:
        stats = collect_stats(args, langs, stats_dir)
    for lang, s in stats.items():
        print(f"{lang}: {len(s.example_ids)} verses, {s.n_tokens} tokens")

    start = time.perf_counter()
    profile = selectivity_profile(
        stats, n_permutations=args.permutations, n_bootstrap=args.bootstrap, seed=args.seed
    )
    print(f"profile: {time.perf_counter() - start:.0f} s")
    profile.layers.to_csv(out / "layer_profile.csv", index=False)
    profile.u_shape.to_csv(out / "u_shape.csv", index=False)

    masks = select_language_neurons(stats, "lape")
    per_layer = {lang: mask.sum(1).tolist() for lang, mask in masks.items()}
    (out / "lape_per_layer.json").write_text(json.dumps(per_layer))

    img = Path(args.img)
    title = (
        f"Gemma 3 270M, Bible, {len(next(iter(stats.values())).example_ids)} verses, "
        f"positions=all, {args.permutations} permutations"
    )
    plot_all(profile, img, title)

    print("\n## U-shape statistics\n")
    print(markdown_u_table(profile.u_shape))
    for metric in ("cohens_d", "topk", "rank_corr", "auroc", "prob_diff", "lape"):
        print(f"\n## {metric} per layer\n")
        print(markdown_layer_table(profile.layers, metric))
    print("\n## LAPE-selected neurons per layer (Tang et al. defaults)\n")
    for lang, counts in per_layer.items():
        print(f"{lang}: total {sum(counts)}; per layer {counts}")


if __name__ == "__main__":
    main()
