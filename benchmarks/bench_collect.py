"""Benchmark activation collection on Gemma 3 270M over Bible verses (ratios within one run).

    python benchmarks/bench_collect.py --langs en,fr,ru,zh --verses 48
    python benchmarks/bench_collect.py --model random:~/.cache/mlinguality/gemma-3-270m --device cuda

``--model`` and ``--corpus`` take any spec and source (benchmarks/common.py), including a model
with random weights built from a config (right for speed, meaningless for results).

Prints a markdown table (docs/performance.md keeps the last one):
(a) collect() vs a bare forward to the last block's MLP on the same batches (goal >= 0.95x);
(b) collect() vs a full forward with logits on the same batches (goal >= 2x faster);
(c) word_final in one pass vs the seed authors' per-word-prefix loop, same numbers (goal >= 10x);
(d) batched vs batch size 1 (goal >= 4x);
(e) peak RSS of collecting 10x the examples, in fresh processes (goal <= 1.1x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from mlinguality.activations.batching import (
    default_max_batch_size,
    pad_batch,
    pad_token_id,
    plan_batches,
    tokenize_texts,
)
from mlinguality.activations.collect import (
    collect,
    forward_to_last_hook,
    hook_post_name,
    word_final_prefix_loop,
)
from mlinguality.activations.reducer import StopForward

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_model_and_corpus, load_bench_corpus, load_bench_model  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batches_of(model, corpus, langs, batch_tokens: int, max_batch_size: int):
    """The very batches collect() runs (one length-sorted plan per language): the tokenized
    texts, the batches as indices into them, and the number of real tokens."""
    texts, batches = [], []
    for lang in langs:
        lang_texts = tokenize_texts(model.tokenizer, corpus.texts(lang))
        plan = plan_batches([len(t.ids) for t in lang_texts], batch_tokens, max_batch_size)
        batches += [[len(texts) + index for index in batch] for batch in plan]
        texts += lang_texts
    return texts, batches, sum(len(t.ids) for t in texts)


def run_batches(model, texts, batches, mode: str) -> None:
    """The same batches as collect(): 'bare' stops after the last hook_post, 'full' runs to logits.

    Waits for the device at the end, as collect() does (it returns host statistics)."""
    last = hook_post_name(model.cfg.n_layers - 1)

    def stop(acts, hook):
        raise StopForward

    with torch.inference_mode():
        for indices in batches:
            batch = pad_batch(
                texts, indices, pad_token_id(model.tokenizer), "right", model.cfg.device
            )
            if mode == "bare":
                with model.hooks(fwd_hooks=[(last, stop)]):
                    forward_to_last_hook(model, batch, model.cfg.device)
            else:
                model(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    return_type="logits",
                    use_cache=False,
                )
    synchronize(model.cfg.device)


def synchronize(device) -> None:
    """Wait for the queued kernels of ``device`` (CUDA launches return before they finish)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_child(n_verses: int, langs: list[str], model: str, corpus: str) -> float:
    """Peak RSS (GB) of a fresh process that loads the model and collects n_verses per language."""
    code = (
        "import torch; torch.set_num_threads(2)\n"
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from common import load_bench_corpus, load_bench_model\n"
        "from mlinguality.activations.collect import collect\n"
        f"model = load_bench_model({model!r})\n"
        f"corpus = load_bench_corpus({corpus!r}, {langs!r}, limit={n_verses})\n"
        f"collect(model, corpus, {langs!r}, progress=False)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from this (large) parent
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1e6  # kB -> GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,fr,ru,zh")
    parser.add_argument(
        "--verses", type=int, default=48, help="verses per language for (a), (b), (d)"
    )
    parser.add_argument("--prefix-verses", type=int, default=4, help="verses for (c)")
    parser.add_argument("--rss-verses", type=int, default=20, help="N for (e): N vs 10N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="collect's batch_tokens")
    parser.add_argument(
        "--max-batch-size", type=int, help="collect's max_batch_size (default: collect's own)"
    )
    add_model_and_corpus(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    model = load_bench_model(args.model, device=args.device, dtype=args.dtype)
    corpus = load_bench_corpus(args.corpus, langs, limit=args.verses)
    if args.max_batch_size is None:
        args.max_batch_size = default_max_batch_size(args.batch_tokens)
    texts, batches, real_tokens = batches_of(
        model, corpus, langs, args.batch_tokens, args.max_batch_size
    )

    def do_collect(**kwargs):
        kwargs.setdefault("batch_tokens", args.batch_tokens)
        kwargs.setdefault("max_batch_size", args.max_batch_size)
        return collect(model, corpus, langs, progress=False, **kwargs)

    rows = []
    t_collect = timed(do_collect, args.repeats)
    t_bare = timed(lambda: run_batches(model, texts, batches, "bare"), args.repeats)
    t_full = timed(lambda: run_batches(model, texts, batches, "full"), args.repeats)
    rows.append(
        (
            "(a) collect vs bare forward to last block",
            t_bare / t_collect,
            ">= 0.95x",
            f"{real_tokens / t_collect:.0f} tok/s collect, {real_tokens / t_bare:.0f} bare",
        )
    )
    rows.append(
        (
            "(b) collect vs full forward with logits",
            t_full / t_collect,
            ">= 2x",
            f"{real_tokens / t_full:.0f} tok/s full",
        )
    )

    prefix_corpus = load_bench_corpus(args.corpus, langs[:1], limit=args.prefix_verses)
    prefix_texts = prefix_corpus.texts(langs[0])
    t_one = timed(
        lambda: collect(model, prefix_corpus, langs[:1], positions="word_final", progress=False), 1
    )
    start = time.perf_counter()
    loop = [word_final_prefix_loop(model, text) for text in prefix_texts]
    t_loop = time.perf_counter() - start
    one = collect(model, prefix_corpus, langs[:1], positions="word_final", progress=False)[langs[0]]
    loop_sum = torch.cat(loop).sum(0).double()
    diff = ((one.sum - loop_sum).abs().max() / loop_sum.abs().max()).item()
    rows.append(
        (
            "(c) word_final one pass vs prefix loop",
            t_loop / t_one,
            ">= 10x",
            f"{sum(len(x) for x in loop)} words; max rel diff of sums {diff:.1e}",
        )
    )

    t_single = timed(lambda: do_collect(max_batch_size=1), 1)
    rows.append(
        (
            "(d) batched vs batch size 1",
            t_single / t_collect,
            ">= 4x",
            f"{real_tokens / t_single:.0f} tok/s at batch 1",
        )
    )

    if not args.skip_rss:
        small = peak_rss_child(args.rss_verses, langs, args.model, args.corpus)
        large = peak_rss_child(10 * args.rss_verses, langs, args.model, args.corpus)
        rows.append(
            (
                "(e) peak RSS, 10x examples",
                large / small,
                "<= 1.1x",
                f"{small:.2f} GB vs {large:.2f} GB",
            )
        )

    print(
        f"\n{args.model}, {args.dtype}, {args.device}, {args.threads} threads; {len(langs)} languages "
        f"({args.langs}) x {args.verses} verses, batch_tokens {args.batch_tokens}, max_batch_size {args.max_batch_size} = {real_tokens} tokens in {len(batches)} batches; median of {args.repeats}\n"
    )
    print("| measure | ratio | goal | detail |\n|---|---|---|---|")
    for name, ratio, goal, detail in rows:
        print(f"| {name} | {ratio:.2f}x | {goal} | {detail} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
