"""Benchmark collect(residual=True) against the MLP-only collection on the same corpus (one run).

    python benchmarks/bench_residual.py --model tiny --verses 48
    python benchmarks/bench_residual.py --langs en,fr,ru,zh --verses 48 --threads 2

The residual pass records ``blocks.L.hook_resid_post`` in the same forward (a per-example mean
over the counted positions and a lens sample of ``--lens-positions`` positions per language)
and runs one block further than the MLP-only pass (to the last layer's resid_post, not its
hook_post). Prints a markdown table: the median seconds of each (the two alternate, so load
drifts hit both) and their ratio (goal <= 1.15x). ``--model`` and ``--corpus`` take any spec
and source of benchmarks/common.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from mlinguality.activations.collect import collect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_model_and_corpus, load_bench_corpus, load_bench_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,fr,ru,zh")
    parser.add_argument("--verses", type=int, default=48, help="verses per language")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--positions", default="all")
    parser.add_argument("--per-example", action="store_true", help="collect's per_example")
    parser.add_argument("--lens-positions", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="collect's batch_tokens")
    add_model_and_corpus(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    start = time.perf_counter()
    model = load_bench_model(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    corpus = load_bench_corpus(args.corpus, langs, limit=args.verses)

    def run(residual: bool) -> float:
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        stats = collect(
            model,
            corpus,
            langs,
            positions=args.positions,
            per_example=args.per_example,
            batch_tokens=args.batch_tokens,
            residual=residual,
            lens_positions=args.lens_positions,
            progress=False,
        )
        elapsed = time.perf_counter() - start  # collect returns host tensors: nothing in flight
        run.tokens = sum(lang.n_tokens for lang in stats.values())
        return elapsed

    run(False), run(True)  # warm-up
    plain, resid = [], []
    for _ in range(args.repeats):
        plain.append(run(False))
        resid.append(run(True))
    t_plain, t_resid = statistics.median(plain), statistics.median(resid)
    with open("/proc/loadavg") as handle:
        load = " ".join(handle.read().split()[:3])
    print(
        f"\n{args.model} (loaded in {load_s:.0f} s), {args.dtype}, {args.device}, "
        f"{args.threads} threads; {len(langs)} languages ({args.langs}) x {args.verses} verses, "
        f"positions {args.positions}, per_example {args.per_example}, {run.tokens} counted "
        f"tokens, batch_tokens {args.batch_tokens}; median of {args.repeats}; load {load}\n"
    )
    print("| measure | seconds | ratio | goal |\n|---|---|---|---|")
    print(f"| collect, MLP only | {t_plain:.3f} | 1.00x | |")
    print(f"| collect, residual=True | {t_resid:.3f} | {t_resid / t_plain:.2f}x | <= 1.15x |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
