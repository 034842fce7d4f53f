"""What issue 14 asks of a GPU, measured in one process: speed ratios, CPU agreement, memory.

    python benchmarks/gpu_check.py --device cuda --model random:/tmp/gemma-3-270m \\
        --corpus corpus.tsv --sections sweep,agree,profile,sizes

Ratios are within one run (same process, same batches, median of ``--repeats`` after a
warm-up). Sections:

- ``sweep``: per dtype (float32, bfloat16) and batch plan (``batch_tokens/max_batch_size``),
  (a) collect() against a bare forward to the last block's MLP, (b) against a full forward
  with logits, and bf16 collect against fp32 collect. A plan whose full forward does not fit in
  memory says so.
- ``agree``: the statistics collected on ``--device`` (fp32 and bf16) against the CPU's fp32
  statistics of the same weights (the random weights are drawn on the CPU), and the held-out
  loss of ``evaluate`` (its scored-positions path and the full forward) likewise.
- ``profile``: torch.profiler over one collect(): host time, device kernel time, and the calls
  that make the host wait for the device.
- ``sizes``: tokens/s and peak device memory of collect() per model shape (Gemma 3 270M, Gemma
  3 1B's shape, Llama 3.2 1B's shape with Gemma's tokenizer), fp32 and bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_collect import batches_of, run_batches, synchronize, timed  # noqa: E402
from common import load_bench_corpus, load_bench_model, random_hf_model  # noqa: E402

from mlinguality.activations.collect import collect  # noqa: E402

GEMMA_1B = (
    "num_hidden_layers=26,hidden_size=1152,intermediate_size=6912,num_attention_heads=4,"
    "num_key_value_heads=1,head_dim=256,layer_types="
    + json.dumps((["sliding_attention"] * 5 + ["full_attention"]) * 4 + ["sliding_attention"] * 2)
)
LLAMA_1B = {  # Llama 3.2 1B's blocks; the vocabulary is Gemma's (its tokenizer is at hand)
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    "tie_word_embeddings": True,
    "vocab_size": 262144,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
}


def collector(model, corpus, langs, batch_tokens: int, max_batch_size: int, per_example: bool):
    """A no-argument collect() call with this plan (what :func:`timed` times)."""
    return lambda: collect(
        model, corpus, langs, batch_tokens=batch_tokens, max_batch_size=max_batch_size,
        per_example=per_example, progress=False,
    )  # fmt: skip


def free(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def sweep(args, langs) -> None:
    plans = args.plans
    corpus = load_bench_corpus(args.corpus, langs, limit=args.verses)
    collect_s: dict[tuple, float] = {}
    print("\n## sweep\n")
    print(
        "| dtype | plan | batches | tokens | collect tok/s | (a) vs bare | (b) vs full | "
        "collect per_example tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        model = load_bench_model(args.model, device=args.device, dtype=dtype)
        for batch_tokens, max_batch_size in plans:
            collect_s[(dtype, batch_tokens, max_batch_size)] = sweep_plan(
                args, model, corpus, langs, dtype, batch_tokens, max_batch_size
            )
        model = None
        free(args.device)
    for batch_tokens, max_batch_size in plans:
        key = (batch_tokens, max_batch_size)
        ratio = collect_s[("float32", *key)] / collect_s[("bfloat16", *key)]
        print(f"\nbf16 collect vs fp32 collect at {batch_tokens}/{max_batch_size}: {ratio:.2f}x")


def sweep_plan(args, model, corpus, langs, dtype, batch_tokens, max_batch_size) -> float:
    """One row of the sweep; returns collect()'s seconds."""
    texts, batches, tokens = batches_of(model, corpus, langs, batch_tokens, max_batch_size)

    plan = (model, corpus, langs, batch_tokens, max_batch_size)
    t_collect = timed(collector(*plan, per_example=False), args.repeats)
    t_example = timed(collector(*plan, per_example=True), args.repeats)
    t_bare = timed(lambda: run_batches(model, texts, batches, "bare"), args.repeats)
    try:
        t_full = timed(lambda: run_batches(model, texts, batches, "full"), args.repeats)
        full = f"{t_full / t_collect:.2f}x ({tokens / t_full:.0f} tok/s)"
    except torch.OutOfMemoryError:
        full = "out of memory"
    free(args.device)
    print(
        f"| {dtype} | {batch_tokens}/{max_batch_size} | {len(batches)} | {tokens} | "
        f"{tokens / t_collect:.0f} | {t_bare / t_collect:.2f}x "
        f"({tokens / t_bare:.0f} tok/s) | {full} | {tokens / t_example:.0f} |",
        flush=True,
    )
    return t_collect


def compare_stats(ref: dict, got: dict) -> str:
    worst = {"mean": 0.0, "share": 0.0, "max": 0.0, "example_mean": 0.0}
    counts_equal = True
    for lang, a in ref.items():
        b = got[lang]
        counts_equal &= a.n_tokens == b.n_tokens
        scale = a.mean.abs().max().item()
        worst["mean"] = max(worst["mean"], (b.mean - a.mean).abs().max().item() / scale)
        worst["share"] = max(worst["share"], (b.p_positive - a.p_positive).abs().max().item())
        worst["max"] = max(
            worst["max"], ((b.max - a.max).abs() / a.max.abs().clamp_min(1e-6)).max().item()
        )
        diff = (b.example_mean - a.example_mean).abs().max().item()
        worst["example_mean"] = max(worst["example_mean"], diff / a.example_mean.abs().max().item())
    return (
        f"token counts equal: {counts_equal}; means max |diff| / max |mean|: "
        f"{worst['mean']:.1e}; positive shares max |diff|: {worst['share']:.1e}; "
        f"maxima max rel diff: {worst['max']:.1e}; per-verse means max |diff| / max: "
        f"{worst['example_mean']:.1e}"
    )


def agree(args, langs) -> None:
    from mlinguality.ablation import evaluation

    print("\n## agree (CPU fp32 is the reference)\n")
    corpus = load_bench_corpus(args.corpus, langs, limit=args.agree_verses)
    cpu = load_bench_model(args.model, device="cpu", dtype="float32")
    checksum = sum(p.double().abs().sum().item() for p in cpu.parameters())
    print(f"weights checksum (sum of |w|, CPU fp32): {checksum:.6f}")
    encoded_cpu = evaluation.encode_texts(
        cpu.tokenizer, corpus.texts(langs[0])[:40], langs[0], batch_tokens=512
    )
    start = time.perf_counter()
    reference = collect(cpu, corpus, langs, per_example=True, progress=False)
    cpu_s = time.perf_counter() - start
    reference_nll = evaluation.evaluate(cpu, encoded_cpu).nll
    print(f"CPU collect {cpu_s:.1f} s ({torch.get_num_threads()} threads); NLL {reference_nll:.4f}")
    del cpu
    free("cpu")
    for dtype in ("float32", "bfloat16"):
        model = load_bench_model(args.model, device=args.device, dtype=dtype)
        got = collect(model, corpus, langs, per_example=True, progress=False)
        print(f"- {dtype} on {args.device}: {compare_stats(reference, got)}")
        encoded = evaluation.encode_texts(
            model.tokenizer, corpus.texts(langs[0])[:40], langs[0], batch_tokens=512,
            device=args.device,
        )  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            packed_ok = evaluation._packed_unembedding_ok(model, encoded.batches[0])
            packed = evaluation.evaluate(model, encoded).nll
        checked = evaluation._packed_unembedding_ok
        evaluation._packed_unembedding_ok = lambda *_: False
        try:
            full = evaluation.evaluate(model, encoded).nll
        finally:
            evaluation._packed_unembedding_ok = checked
        print(
            f"  evaluate: probe passed: {packed_ok} (max |diff| {probe_diff(model, encoded):.1e}); NLL {packed:.4f} (scored positions), "
            f"{full:.4f} (full forwards), CPU fp32 {reference_nll:.4f}; relative to CPU "
            f"{(packed - reference_nll) / reference_nll:.1e} / {(full - reference_nll) / reference_nll:.1e}"
            + (f"; warnings: {[str(w.message) for w in caught]}" if caught else ""),
            flush=True,
        )
        del model
        free(args.device)


def probe_diff(model, encoded) -> float:
    """The largest |NLL difference| of evaluate's probe (scored positions vs full forward)."""
    from mlinguality.ablation.evaluation import probe_nll

    packed, full = probe_nll(model, encoded.batches[0])
    return (packed - full).abs().max().item()


def profile(args, langs) -> None:
    print("\n## profile: one collect()\n")
    batch_tokens, max_batch_size = args.plans[-1]
    corpus = load_bench_corpus(args.corpus, langs, limit=args.verses)
    for dtype in ("float32", "bfloat16"):
        profile_one(args, corpus, langs, dtype, batch_tokens, max_batch_size)
        free(args.device)


def profile_one(args, corpus, langs, dtype, batch_tokens, max_batch_size) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = load_bench_model(args.model, device=args.device, dtype=dtype)
    run = collector(model, corpus, langs, batch_tokens, max_batch_size, per_example=True)
    run()
    activities = [ProfilerActivity.CPU]
    if torch.device(args.device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        run()
        synchronize(args.device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    waits = {e.key: e.count for e in events if e.key in WAITS}
    launches = sum(e.count for e in events if e.key == "cudaLaunchKernel")
    print(
        f"{dtype}, plan {batch_tokens}/{max_batch_size}, per_example: wall {wall * 1e3:.0f} ms "
        f"(profiled), device kernels {device_us / 1e3:.0f} ms "
        f"({device_us / 1e6 / wall:.0%} busy), kernel launches {launches}, {waits}"
    )
    print(events.table(sort_by="self_cuda_time_total", row_limit=12), flush=True)


WAITS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaMemcpyAsync",
    "cudaMemcpy",
    "aten::item",
    "aten::_local_scalar_dense",
)


def sizes(args, langs) -> None:
    print("\n## sizes: collect() per model shape\n")
    folder = Path(args.model.removeprefix("random:").partition(":")[0]).expanduser()
    llama = Path(args.scratch) / "llama-3.2-1b-shape"
    llama.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, llama / name)
    llama_config = dict(LLAMA_1B)
    if args.shrink:  # a dry run on a small machine: the same code on small shapes
        llama_config.update(num_hidden_layers=3, hidden_size=256, intermediate_size=512)
    (llama / "config.json").write_text(json.dumps(llama_config))
    shrink = ",num_hidden_layers=3,layer_types=" + json.dumps(["sliding_attention"] * 3)
    shapes = {
        "Gemma 3 270M": f"{folder}:" + (shrink[1:] if args.shrink else ""),
        "Gemma 3 1B shape": f"{folder}:{GEMMA_1B}" + (shrink if args.shrink else ""),
        "Llama 3.2 1B shape (Gemma's 262k vocabulary)": f"{llama}:",
    }
    corpus = load_bench_corpus(args.corpus, langs, limit=args.verses)
    print(
        "| shape | parameters | dtype | weights GB | peak GB (collect) | collect tok/s | "
        "bare forward tok/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, spec in shapes.items():
        hf_model, tokenizer = random_hf_model(spec, init_device=args.device)
        n_params = sum(p.numel() for p in hf_model.parameters())
        for dtype in ("float32", "bfloat16"):
            try:
                size_row(args, corpus, langs, label, hf_model, n_params, tokenizer, dtype)
            except torch.OutOfMemoryError:
                print(f"| {label} | {n_params / 1e9:.2f} B | {dtype} | out of memory | | | |")
            free(args.device)
        hf_model = None
        free(args.device)


def size_row(args, corpus, langs, label, hf_model, n_params, tokenizer, dtype) -> None:
    from mlinguality.model import _boot, to_dtype

    batch_tokens, max_batch_size = args.plans[-1]
    cuda = torch.device(args.device).type == "cuda"
    model = _boot(hf_model, tokenizer, f"random:{label}", args.device, to_dtype(dtype))
    weights = peak = float("nan")
    if cuda:
        synchronize(args.device)
        weights = torch.cuda.memory_allocated(args.device) / 1e9
        torch.cuda.reset_peak_memory_stats(args.device)
    texts, batches, tokens = batches_of(model, corpus, langs, batch_tokens, max_batch_size)

    run = collector(model, corpus, langs, batch_tokens, max_batch_size, per_example=True)
    t_collect = timed(run, args.repeats)
    if cuda:
        peak = torch.cuda.max_memory_allocated(args.device) / 1e9
    t_bare = timed(lambda: run_batches(model, texts, batches, "bare"), args.repeats)
    print(
        f"| {label} | {n_params / 1e9:.2f} B | {dtype} | {weights:.2f} | {peak:.2f} | "
        f"{tokens / t_collect:.0f} | {tokens / t_bare:.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:~/.cache/mlinguality/gemma-3-270m")
    parser.add_argument("--corpus", default="bible")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--langs", default="en,fr,ru,zh")
    parser.add_argument("--verses", type=int, default=200)
    parser.add_argument("--agree-verses", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--plans",
        default="4096/64,16384/256,32768/512",
        help="batch_tokens/max_batch_size plans of the sweep; the last one is used elsewhere",
    )
    parser.add_argument("--sections", default="sweep,agree,profile,sizes")
    parser.add_argument("--scratch", default="/tmp/mlinguality-gpu-check")
    parser.add_argument("--shrink", action="store_true", help="small shapes (dry runs on a CPU)")
    args = parser.parse_args()
    args.plans = [tuple(int(x) for x in plan.split("/")) for plan in args.plans.split(",")]
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    print(
        f"torch {torch.__version__}, device {args.device}"
        + (
            f" ({torch.cuda.get_device_name(args.device)})"
            if args.device.startswith("cuda")
            else ""
        )
        + f", model {args.model}, corpus {args.corpus}, langs {args.langs}, verses {args.verses}"
    )
    failed = False
    for section in args.sections.split(","):
        start = time.perf_counter()
        try:
            {"sweep": sweep, "agree": agree, "profile": profile, "sizes": sizes}[section](
                args, langs
            )
        except Exception:  # one section's failure must not cost the others' numbers
            traceback.print_exc()
            failed = True
        with contextlib.suppress(Exception):
            free(args.device)
        print(f"[{section}: {time.perf_counter() - start:.0f} s]", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
