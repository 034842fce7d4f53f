"""Held-out loss of one language: the scored-positions path of ``evaluate`` vs full forwards.

``evaluate`` stops each forward at the unembedding's input and streams the scored positions
through the output head (``mlinguality.ablation.evaluation.next_token_nll``); the reference is
the full forward with logits and ``token_nll`` (what ``evaluate`` falls back to). With
``--bf16`` a bf16 copy of the model (``ablation.dtype: bfloat16``) runs the same evaluation.
Runs alternate; best and all times, and the summed NLL of each (equal within fp32 rounding).

    python benchmarks/bench_loss.py --threads 2 --texts 40 --bf16     # Gemma 3 270M, English
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_model_and_corpus, load_bench_corpus, load_bench_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_corpus(parser)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--texts", type=int, default=40, help="evaluation verses")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=512)
    parser.add_argument("--bf16", action="store_true", help="also a bf16 copy of the model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlinguality.ablation import evaluation
    from mlinguality.model import model_in_dtype

    model = load_bench_model(args.model, device=args.device)
    corpus = load_bench_corpus(args.corpus, [args.lang], limit=2 * args.texts, seed=0)
    encoded = evaluation.encode_texts(
        model.tokenizer, corpus.texts(args.lang)[: args.texts], args.lang,
        batch_tokens=args.batch_tokens,
    )  # fmt: skip
    checked = evaluation._packed_unembedding_ok

    def full(m, texts):
        evaluation._packed_unembedding_ok = lambda *_: False  # the fallback: full forwards
        try:
            return evaluation.evaluate(m, texts)
        finally:
            evaluation._packed_unembedding_ok = checked

    runs = {
        "scored positions (evaluate)": (evaluation.evaluate, model),
        "full forwards": (full, model),
    }
    if args.bf16:
        runs["scored positions, bf16 copy"] = (
            evaluation.evaluate,
            model_in_dtype(model, "bfloat16"),
        )
    times: dict[str, list[float]] = {name: [] for name in runs}
    nll: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (fn, m) in runs.items():
            start = time.perf_counter()
            nll[name] = fn(m, encoded).nll
            times[name].append(time.perf_counter() - start)
    print(
        f"model={args.model} device={args.device} lang={args.lang} texts={args.texts} threads={args.threads} "
        f"scored tokens={encoded.total_predicted} padded={encoded.padded_tokens}"
    )
    print("| run | best wall s | runs (s) | summed NLL (nats) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        runs_s = ", ".join(f"{t:.2f}" for t in values)
        print(f"| {name} | {min(values):.2f} | {runs_s} | {nll[name]:.4f} |")


if __name__ == "__main__":
    main()
