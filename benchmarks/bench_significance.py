"""Time permutation and bootstrap draws at Gemma 3 270M's size (18 layers x 2048 neurons).

Usage: .venv/bin/python benchmarks/bench_significance.py [--examples 300] [--permutations 1000]
    [--bootstrap 200] [--threads 2] [--metrics mean_diff,cohens_d,...]
Prints one line per metric (its own run) and one for all metrics together (shared draws).
"""

from __future__ import annotations

import argparse
import time

import torch

from mlinguality.selectivity.pairs import PairTensors
from mlinguality.selectivity.resampling import PAIR_METRICS, pair_score_draws


def synthetic_pair(n_examples: int, n_layers: int, d_mlp: int) -> PairTensors:
    g = torch.Generator().manual_seed(0)
    shape = (n_examples, n_layers, d_mlp)
    baseline = torch.randn(n_layers, d_mlp, generator=g)
    return PairTensors(
        "en",
        "xx",
        baseline + torch.randn(shape, generator=g),
        baseline + torch.randn(shape, generator=g),
        torch.rand(shape, generator=g),
        torch.rand(shape, generator=g),
        torch.randint(5, 60, (n_examples,), generator=g).float(),
        torch.randint(5, 60, (n_examples,), generator=g).float(),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--d-mlp", type=int, default=2048)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--bootstrap", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--metrics", default=",".join(PAIR_METRICS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pair = synthetic_pair(args.examples, args.layers, args.d_mlp)
    metrics = args.metrics.split(",")
    print(
        f"{args.examples} examples x {args.layers} layers x {args.d_mlp} neurons, "
        f"{args.permutations} permutations, {args.bootstrap} bootstrap resamples, "
        f"{args.threads} threads"
    )
    runs = [[m] for m in metrics] + ([metrics] if len(metrics) > 1 else [])
    for run in runs:
        start = time.perf_counter()
        pair_score_draws(pair, run, args.permutations, args.bootstrap, seed=0)
        elapsed = time.perf_counter() - start
        print(f"{'+'.join(run):60s} {elapsed:7.2f} s")


if __name__ == "__main__":
    main()
