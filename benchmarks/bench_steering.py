"""Steered generation vs the same generation without hooks (goal: ratio <= 1.1).

Both runs call :func:`mlinguality.steering.generation.generate` on the same prompts with the same
batches, KV cache and greedy decoding; the steered run adds the steering hooks (the clock hook,
and a write and a check hook on every targeted layer) on a random 1% of all neurons spread over
every layer (the size of a LAPE selection), alpha 1, all positions. Generation stops only at
``max_new_tokens`` (no EOS stop), so both runs do the same number of forward passes. Runs
alternate (plain, steered, plain, ...) so load on a shared machine hits both alike; the ratio is
of medians of wall time and of this process's CPU time.

    python benchmarks/bench_steering.py                       # Gemma 3 270M
    python benchmarks/bench_steering.py --model tiny --prompts 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="a model spec, or 'tiny'")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.01, help="share of neurons steered")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlinguality import TinyModelConfig, load_model
    from mlinguality.corpus import load_corpus
    from mlinguality.steering import Intervention, generate, steering_hooks
    from mlinguality.steering.language_id import first_words

    model = load_model(TinyModelConfig() if args.model == "tiny" else args.model)
    corpus = load_corpus("bible", ["en"], books="Matthew", limit=args.prompts, seed=2)
    prompts = [first_words(text, 5) for text in corpus.texts("en")]
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(n_layers, d_mlp, generator=generator) < args.rate
    intervention = Intervention(mask, torch.rand(n_layers, d_mlp, generator=generator), 1.0)

    def run(steered: bool) -> tuple[float, float, list]:
        hooks = steering_hooks(model, intervention) if steered else None
        wall, cpu = time.perf_counter(), time.process_time()
        out = generate(
            model,
            prompts,
            max_new_tokens=args.max_new_tokens,
            hooks=hooks,
            stop_at_eos=False,
            batch_size=args.prompts,
        )
        return time.perf_counter() - wall, time.process_time() - cpu, out.new_ids

    run(False)  # warm-up (and the KV cache check)
    plain_wall, plain_cpu, steer_wall, steer_cpu = [], [], [], []
    for _ in range(args.repeats):
        wall, cpu, plain_ids = run(False)
        plain_wall.append(wall)
        plain_cpu.append(cpu)
        wall, cpu, steered_ids = run(True)
        steer_wall.append(wall)
        steer_cpu.append(cpu)
    tokens = args.prompts * args.max_new_tokens
    median = statistics.median
    print(
        f"model {args.model}, {args.prompts} prompts x {args.max_new_tokens} new tokens, "
        f"{int(mask.sum())} neurons steered in {int(mask.any(1).sum())} layers, "
        f"threads {args.threads}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"plain   : {median(plain_wall):.2f} s wall ({tokens / median(plain_wall):.1f} tok/s), "
        f"{median(plain_cpu):.2f} s CPU"
    )
    print(
        f"steered : {median(steer_wall):.2f} s wall ({tokens / median(steer_wall):.1f} tok/s), "
        f"{median(steer_cpu):.2f} s CPU"
    )
    print(
        f"ratio   : {median(steer_wall) / median(plain_wall):.3f}x wall, "
        f"{median(steer_cpu) / median(plain_cpu):.3f}x CPU (goal <= 1.1); "
        f"outputs changed: {sum(a != b for a, b in zip(plain_ids, steered_ids, strict=True))}"
        f"/{len(prompts)}"
    )


if __name__ == "__main__":
    main()
