"""Tests for mlinguality/activations/reducer.py: BatchReducer fed by its own hooks, batch by
batch, on random activations, against a per-token Python loop in float64.

The hooks are called the way TransformerLens calls them (``hook(acts, hook=hook_point)``), one
layer after the other, without a model: what the reducer sees is exactly what the test built.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens.hook_points import HookPoint

from mlinguality.activations.reducer import BatchReducer, StopForward
from mlinguality.activations.stats import ActivationStats
from tests.utils import assert_close

N_LAYERS, D_MLP = 3, 6
POINT = HookPoint()


def random_batches(gated: bool, dtype: torch.dtype = torch.float32, offset: float = 0.0):
    """Four batches of ``(rows, mask, post, pre)``: ``post``/``pre`` ``[batch, pos, layer, d_mlp]``.

    The masks leave some rows without a counted position, and batch 2 counts nothing at all.
    """
    generator = torch.Generator().manual_seed(0)
    batches, next_row = [], 0
    for number, (n_rows, width) in enumerate([(3, 5), (2, 7), (2, 4), (4, 3)]):
        post = offset + torch.randn(n_rows, width, N_LAYERS, D_MLP, generator=generator)
        pre = post + 0.5 * torch.randn(post.shape, generator=generator) if gated else None
        mask = torch.rand(n_rows, width, generator=generator) < 0.6
        mask[0] = False  # a row (example) with no counted position
        if number == 2:
            mask[:] = False
        rows = list(range(next_row, next_row + n_rows))
        next_row += n_rows
        batches.append((rows, mask, post.to(dtype), None if pre is None else pre.to(dtype)))
    return batches


def feed(reducer: BatchReducer, batch, gated: bool):
    """One batch through the reducer's hooks, as a forward pass would fire them."""
    rows, mask, post, pre = batch
    reducer.start(mask, rows)
    for layer in range(N_LAYERS):  # a gated block fires hook_pre before hook_post
        if gated:
            reducer.pre_hook(layer)(pre[:, :, layer].contiguous(), hook=POINT)
        reducer.post_hook(layer)(post[:, :, layer].contiguous(), hook=POINT)
    return reducer.finish()


def run_reducer(batches, gated: bool):
    """Feed every batch to a fresh reducer; the statistics, per-batch shares and row counts."""
    stats = ActivationStats.empty("en", N_LAYERS, D_MLP, gated)
    reducer = BatchReducer(stats, "cpu", per_example=True, stop_after_last=False)
    shares, counts = [], []
    for batch in batches:
        shares.append(feed(reducer, batch, gated))
        counts.append(reducer.counts)
        assert reducer.fired == set(range(N_LAYERS))
        assert reducer.gate_fired == (set(range(N_LAYERS)) if gated else set())
    return reducer.to_stats(), shares, counts


def token_loop(batches):
    """Oracle: every counted (row, position) visited in a Python loop, float64 throughout."""
    kept, kept_gate, per_row = [], [], []
    for _, mask, post, pre in batches:
        for row in range(mask.shape[0]):
            acts, gates = [], []
            for position in range(mask.shape[1]):
                if mask[row, position]:
                    acts.append(post[row, position].double())  # [layer, d_mlp]
                    if pre is not None:
                        gates.append(pre[row, position].double())
            kept += acts
            kept_gate += gates
            per_row.append((acts, gates))
    every = torch.stack(kept)  # [token, layer, d_mlp]
    n = len(kept)
    mean = every.sum(0) / n
    m2 = torch.zeros(N_LAYERS, D_MLP, dtype=torch.float64)
    for x in kept:
        m2 += (x - mean) ** 2
    examples = []
    for acts, gates in per_row:
        k = max(len(acts), 1)
        zeros = torch.zeros(N_LAYERS, D_MLP, dtype=torch.float64)
        examples.append(
            {
                "n_tokens": len(acts),
                "mean": sum(acts, zeros) / k,
                "frac_positive": sum(((x > 0).double() for x in acts), zeros) / k,
                "frac_gate_positive": sum(((g > 0).double() for g in gates), zeros) / k,
            }
        )
    return {
        "n_tokens": n,
        "sum": every.sum(0),
        "m2": m2,
        "n_positive": (every > 0).sum(0),
        "max": every.max(0).values,
        "n_gate_positive": (torch.stack(kept_gate) > 0).sum(0) if kept_gate else None,
        "examples": examples,
    }


@pytest.mark.parametrize("gated", [True, False])
def test_reducer_equals_the_per_token_loop(gated):
    batches = random_batches(gated)
    stats, shares, counts = run_reducer(batches, gated)
    expected = token_loop(batches)
    assert stats.n_tokens == expected["n_tokens"]
    assert stats.sum.dtype == stats.m2.dtype == torch.float64
    assert_close(stats.sum, expected["sum"], "fp32")
    assert_close(stats.m2, expected["m2"], "fp32")
    assert torch.equal(stats.n_positive, expected["n_positive"])
    assert torch.equal(stats.max, expected["max"].float())
    if gated:
        assert torch.equal(stats.n_gate_positive, expected["n_gate_positive"])
    else:
        assert stats.n_gate_positive is None
    # the per-example shares of each batch, row by row (a row with no counted position: 0)
    examples = expected["examples"]
    assert torch.equal(torch.cat(counts), torch.tensor([e["n_tokens"] for e in examples]))
    for name in ("mean", "frac_positive", "frac_gate_positive"):
        if name == "frac_gate_positive" and not gated:
            assert all(batch_shares[name] is None for batch_shares in shares)
            continue
        values = torch.cat([batch_shares[name] for batch_shares in shares])  # [row, layer, d_mlp]
        oracle = torch.stack([e[name] for e in examples]).float()
        assert_close(values, oracle, "fp32", msg=name)


def test_a_checkpoint_is_a_copy_and_resuming_from_it_ends_the_same(tmp_path):
    """What collect() does every checkpoint_every_s: to_stats(), save; a killed run loads the
    file into a new reducer and feeds it the remaining batches."""
    batches = random_batches(gated=True)
    empty = ActivationStats.empty("en", N_LAYERS, D_MLP, gated=True)
    reducer = BatchReducer(empty, "cpu", per_example=False, stop_after_last=False)
    assert feed(reducer, batches[0], gated=True) is None  # nothing per example
    checkpoint = reducer.to_stats()
    path = checkpoint.save(tmp_path / "en.safetensors")
    held = {name: getattr(checkpoint, name) for name in ("sum", "m2", "max", "n_gate_positive")}
    at_checkpoint = {name: value.clone() for name, value in held.items()}
    for batch in batches[1:]:
        feed(reducer, batch, gated=True)
    final = reducer.to_stats()
    assert final.n_tokens == token_loop(batches)["n_tokens"] > int(batches[0][1].sum())
    for name, value in held.items():  # the later batches did not write into the checkpoint's
        assert torch.equal(value, at_checkpoint[name]), name
        assert not torch.equal(getattr(final, name), at_checkpoint[name]), name
    resumed = BatchReducer(
        ActivationStats.load(path), "cpu", per_example=False, stop_after_last=False
    )
    for batch in batches[1:]:
        feed(resumed, batch, gated=True)
    again = resumed.to_stats()
    assert again.n_tokens == final.n_tokens
    for name in ("sum", "m2", "max", "n_positive", "n_gate_positive"):
        assert torch.equal(getattr(again, name), getattr(final, name)), name


def test_the_spread_keeps_its_digits_far_from_zero():
    """Activations at 400 +- 1: each batch's spread is taken about the batch's own mean, so the
    float32 batches keep the variance that a raw float32 sum of squares loses."""
    batches = random_batches(gated=False, offset=400.0)
    stats, _, _ = run_reducer(batches, gated=False)
    expected = token_loop(batches)
    assert_close(stats.m2, expected["m2"], "fp32")
    # the point of the test: the naive float32 formula is off by far more than that tolerance
    kept = torch.cat([post[mask] for _, mask, post, _ in batches])  # [token, layer, d_mlp]
    raw = (kept**2).sum(0) - kept.sum(0) ** 2 / len(kept)
    assert ((raw.double() - expected["m2"]).abs() / expected["m2"]).max() > 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_activations_are_reduced_in_float32(dtype):
    batches = random_batches(gated=True, dtype=dtype)
    stats, _, _ = run_reducer(batches, gated=True)
    expected = token_loop(batches)  # the same half-precision values, upcast exactly
    assert_close(stats.sum, expected["sum"], "fp32")
    assert_close(stats.m2, expected["m2"], "fp32")
    assert torch.equal(stats.max, expected["max"].float())
    assert torch.equal(stats.n_gate_positive, expected["n_gate_positive"])


def test_the_last_layers_hook_leaves_the_forward_pass():
    rows, mask, post, _ = random_batches(gated=False)[0]
    empty = ActivationStats.empty("en", N_LAYERS, D_MLP, gated=False)
    reducer = BatchReducer(empty, "cpu", per_example=False)  # stop_after_last by default
    reducer.start(mask, rows)
    for layer in range(N_LAYERS - 1):
        reducer.post_hook(layer)(post[:, :, layer].contiguous(), hook=POINT)
    with pytest.raises(StopForward):
        reducer.post_hook(N_LAYERS - 1)(post[:, :, -1].contiguous(), hook=POINT)
    assert reducer.fired == set(range(N_LAYERS))
    reducer.finish()
    assert reducer.to_stats().n_tokens == int(mask.sum())
