"""Ablation-matrix cost vs the same number of plain forward passes.

The matrix (baseline + every language's ablation on every language + matched random controls)
runs one forward pass per batch and condition, plus the loss and the ablation hooks. The
reference runs exactly the same batches through ``model(ids, attention_mask=...)`` the same
number of times, with no hooks and no loss. Goal: ratio <= 1.1. Runs alternate (plain, matrix,
plain, matrix, ...) so load on a shared machine hits both alike; medians of wall and process CPU time
(the CPU time of this process is less disturbed by other processes on a shared machine).

    python benchmarks/bench_ablation.py                       # Gemma 3 270M, Bible verses
    python benchmarks/bench_ablation.py --model tiny --texts 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_model_and_corpus, load_bench_corpus, load_bench_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_corpus(parser)
    parser.add_argument("--langs", default="en,fr,ru")
    parser.add_argument("--texts", type=int, default=6, help="evaluation verses per language")
    parser.add_argument("--seeds", type=int, default=1, help="random controls per language")
    parser.add_argument("--rate", type=float, default=0.01, help="share of neurons per set")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlinguality.ablation.evaluation import encode_languages
    from mlinguality.ablation.matrix import ablation_matrix

    model = load_bench_model(args.model)
    langs = args.langs.split(",")
    books = {"books": "Matthew"} if args.corpus == "bible" else {}
    corpus = load_bench_corpus(args.corpus, langs, limit=args.texts, seed=1, **books)
    encoded = encode_languages(
        model.tokenizer,
        {lang: corpus.texts(lang) for lang in langs},
        batch_tokens=args.batch_tokens,
    )
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    generator = torch.Generator().manual_seed(0)
    per_set = max(1, round(args.rate * n_layers * d_mlp))
    sets = {}
    for lang in langs:
        mask = torch.zeros(n_layers * d_mlp, dtype=torch.bool)
        mask[torch.randperm(n_layers * d_mlp, generator=generator)[:per_set]] = True
        sets[lang] = mask.reshape(n_layers, d_mlp)  # [layer, d_mlp] from the flat draw

    n_conditions = 1 + len(langs)  # baseline + one per language row, on every language
    random_passes = args.seeds  # each random control runs on its own language only
    batches = {lang: encoded[lang].batches for lang in langs}
    plan = [b for lang in langs for b in batches[lang]] * n_conditions
    plan += [b for lang in langs for b in batches[lang]] * random_passes
    tokens = sum(b.input_ids.numel() for b in plan)

    def plain() -> None:
        with torch.no_grad():
            for batch in plan:
                model(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    return_type="logits",
                    use_cache=False,
                )

    def matrix() -> None:
        ablation_matrix(model, encoded, sets, "zero", n_seeds=args.seeds)

    plain()  # warm-up (allocator, first-call overheads)
    wall = {"plain": [], "matrix": []}
    cpu = {"plain": [], "matrix": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("matrix", matrix)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print(
        f"model={args.model} langs={args.langs} texts/lang={args.texts} seeds={args.seeds} "
        f"threads={args.threads} neurons/set={per_set}"
    )
    print(f"forward passes per matrix: {len(plan)} ({tokens} padded tokens)")
    print("| run | median wall s | median CPU s | padded tokens / CPU s | wall runs (s) |")
    print("|---|---|---|---|---|")
    for name, key in (("plain forwards", "plain"), ("ablation matrix", "matrix")):
        wall_s, cpu_s = statistics.median(wall[key]), statistics.median(cpu[key])
        runs = ", ".join(f"{t:.2f}" for t in wall[key])
        print(f"| {name} | {wall_s:.2f} | {cpu_s:.2f} | {tokens / cpu_s:.0f} | {runs} |")
    ratio = {
        k: statistics.median(v["matrix"]) / statistics.median(v["plain"])
        for k, v in (("wall", wall), ("cpu", cpu))
    }
    print(f"ratio matrix / plain: {ratio['cpu']:.3f} (CPU time), {ratio['wall']:.3f} (wall)")


if __name__ == "__main__":
    main()
