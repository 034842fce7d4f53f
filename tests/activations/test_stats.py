"""Tests for mlinguality/activations/stats.py against a naive accumulation in plain Python loops.

The oracle (:func:`loop_stats`) walks every example and token one at a time in float64 numpy and
takes the spread in two passes (the mean first, then the squared deviations from it): none of
the merge's arithmetic (Chan's update, concatenation of per-example rows) is in it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mlinguality.activations.stats import (
    ActivationStats,
    ProvenanceError,
    load_stats,
    save_stats,
)
from tests.utils import assert_close

N_LAYERS, D_MLP = 3, 5
META = {"model": "toy", "positions": "all", "include_bos": False, "versions": {"torch": "x"}}


def random_examples(n_examples: int, seed: int, gated: bool):
    """Raw activations per example, ``[tokens, layer, d_mlp]`` with 0 to 6 tokens each.

    Each neuron's activations sit far from 0 against their spread (offsets up to +-300, sd 1),
    where a raw sum of squares would lose the variance; ~1/3 of them are negative. The gate
    pre-activations (gated) are the activations plus noise, so their signs mostly agree.
    """
    rng = np.random.default_rng(seed)
    offset = rng.choice([-300.0, -0.2, 0.0, 0.3, 300.0], size=(N_LAYERS, D_MLP))
    acts, gates = [], []
    for _ in range(n_examples):
        n_tokens = int(rng.integers(0, 7))
        values = offset + rng.normal(size=(n_tokens, N_LAYERS, D_MLP))
        acts.append(values)
        gates.append(values + rng.normal(scale=0.5, size=values.shape) if gated else None)
    return acts, gates


def loop_stats(acts, gates, ids) -> dict:
    """Oracle: every field of ActivationStats by explicit loops over examples and tokens."""
    n_tokens = 0
    total = np.zeros((N_LAYERS, D_MLP))
    n_positive = np.zeros((N_LAYERS, D_MLP), dtype=np.int64)
    n_gate = np.zeros((N_LAYERS, D_MLP), dtype=np.int64)
    top = np.full((N_LAYERS, D_MLP), -np.inf)
    per_n, per_mean, per_frac, per_gate = [], [], [], []
    for example, values in enumerate(acts):
        own_sum = np.zeros((N_LAYERS, D_MLP))
        own_pos = np.zeros((N_LAYERS, D_MLP))
        own_gate = np.zeros((N_LAYERS, D_MLP))
        for token in range(len(values)):
            x = values[token]
            n_tokens += 1
            total += x
            own_sum += x
            n_positive += x > 0
            own_pos += x > 0
            top = np.maximum(top, x)
            if gates[example] is not None:
                n_gate += gates[example][token] > 0
                own_gate += gates[example][token] > 0
        count = len(values)
        per_n.append(count)
        per_mean.append(own_sum / max(count, 1))  # 0 for an example with no counted token
        per_frac.append(own_pos / max(count, 1))
        per_gate.append(own_gate / max(count, 1))
    mean = total / max(n_tokens, 1)
    m2 = np.zeros((N_LAYERS, D_MLP))
    for values in acts:  # second pass: deviations from the final mean
        for x in values:
            m2 += (x - mean) ** 2
    gated = gates[0] is not None
    return {
        "n_tokens": n_tokens,
        "sum": total,
        "m2": m2,
        "n_positive": n_positive,
        "max": top,
        "n_gate_positive": n_gate if gated else None,
        "example_ids": list(ids),
        "example_n_tokens": np.array(per_n, dtype=np.int64),
        "example_mean": np.stack(per_mean),
        "example_frac_positive": np.stack(per_frac),
        "example_frac_gate_positive": np.stack(per_gate) if gated else None,
    }


def as_stats(oracle: dict, lang: str = "en") -> ActivationStats:
    """The oracle's numbers in an ActivationStats (the dtypes collection produces)."""
    dtypes = {"max": torch.float32, "example_n_tokens": torch.int64}
    per_example = ("example_mean", "example_frac_positive", "example_frac_gate_positive")
    fields = {}
    for name, value in oracle.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
            if name in dtypes:
                value = value.to(dtypes[name])
            elif name in per_example:
                value = value.float()
        fields[name] = value
    return ActivationStats(lang=lang, meta=dict(META), **fields)


def assert_matches_oracle(stats: ActivationStats, oracle: dict) -> None:
    expected = as_stats(oracle)
    assert stats.n_tokens == oracle["n_tokens"]
    assert stats.example_ids == oracle["example_ids"]
    assert_close(stats.sum, expected.sum, "exact")
    assert_close(stats.m2, expected.m2, "exact")
    assert torch.equal(stats.n_positive, expected.n_positive)
    assert torch.equal(stats.max, expected.max)
    assert torch.equal(stats.example_n_tokens, expected.example_n_tokens)
    for name in ("n_gate_positive", "example_frac_gate_positive"):
        assert (getattr(stats, name) is None) == (getattr(expected, name) is None), name
    if expected.n_gate_positive is not None:
        assert torch.equal(stats.n_gate_positive, expected.n_gate_positive)
    for name in ("example_mean", "example_frac_positive", "example_frac_gate_positive"):
        if getattr(expected, name) is not None:
            assert_close(getattr(stats, name), getattr(expected, name), "exact", msg=name)


SHARDS = [range(0, 4), range(4, 6), range(6, 11)]  # the middle shard: examples without tokens


def _shards(acts, gates, ids):
    return [
        as_stats(
            loop_stats(
                [acts[i] for i in part], [gates[i] for i in part], ids[part.start : part.stop]
            )
        )
        for part in SHARDS
    ]


def _data(gated: bool, seed: int = 0):
    acts, gates = random_examples(11, seed, gated)
    acts[4] = acts[5] = np.zeros((0, N_LAYERS, D_MLP))  # a shard whose examples count nothing
    if gated:
        gates[4] = gates[5] = np.zeros((0, N_LAYERS, D_MLP))
    ids = [f"v{i}" for i in range(11)]
    return acts, gates, ids


@pytest.mark.parametrize("gated", [True, False])
def test_merged_shards_equal_one_pass_over_all_examples(gated):
    acts, gates, ids = _data(gated)
    oracle = loop_stats(acts, gates, ids)
    first, empty, last = _shards(acts, gates, ids)
    assert empty.n_tokens == 0 and torch.isneginf(empty.max).all()
    merged = first.merge(empty).merge(last)
    assert_matches_oracle(merged, oracle)
    assert_matches_oracle(first + (empty + last), oracle)  # grouping does not matter
    assert merged.meta == META and merged.lang == "en"

    # the derived quantities, against numpy on every counted activation at once
    every = np.concatenate(acts)  # [token, layer, d_mlp]
    assert_close(merged.mean, every.mean(0), "exact")
    assert_close(merged.var, every.var(0, ddof=1), "exact")
    assert_close(merged.sum_sq, (every**2).sum(0), "exact")
    assert_close(merged.p_positive, (every > 0).mean(0), "exact")
    fired = np.concatenate(gates) if gated else every
    assert_close(merged.p_gate_positive, (fired > 0).mean(0), "exact")


def test_merge_refuses_shards_sharing_an_example_id():
    acts, gates, ids = _data(gated=True)
    first, _, last = _shards(acts, gates, ids)
    again = dataclasses.replace(last, example_ids=[*last.example_ids[:-1], first.example_ids[0]])
    with pytest.raises(ProvenanceError, match="sharing example ids, e.g. 'v0'"):
        first.merge(again)
    other_lang = dataclasses.replace(last, lang="fr")
    with pytest.raises(ProvenanceError, match="lang differs"):
        first.merge(other_lang)


def test_reorder_puts_shards_merged_out_of_order_back_in_corpus_order():
    acts, gates, ids = _data(gated=True)
    first, empty, last = _shards(acts, gates, ids)
    shuffled = last.merge(first).merge(empty)  # the order processes happened to finish in
    assert shuffled.example_ids != ids
    position = {example_id: index for index, example_id in enumerate(shuffled.example_ids)}
    ordered = shuffled.reorder([position[example_id] for example_id in ids])
    assert_matches_oracle(ordered, loop_stats(acts, gates, ids))
    for name in ("sum", "m2", "n_positive", "max", "n_gate_positive"):  # untouched by reorder
        assert torch.equal(getattr(ordered, name), getattr(shuffled, name)), name
    reversed_ids = ids[::-1]
    backwards = ordered.reorder(list(range(len(ids)))[::-1])
    assert_matches_oracle(backwards, loop_stats(acts[::-1], gates[::-1], reversed_ids))


@pytest.mark.parametrize("gated", [True, False])
def test_save_load_round_trip_keeps_every_field_bit_for_bit(gated, tmp_path):
    acts, gates, ids = _data(gated)
    first, empty, last = _shards(acts, gates, ids)
    stats = first.merge(empty).merge(last)
    path = stats.save(tmp_path / "deep" / "en.safetensors")
    assert path == tmp_path / "deep" / "en.safetensors"
    assert [p.name for p in path.parent.iterdir()] == ["en.safetensors"]  # no temp file left
    loaded = ActivationStats.load(path)
    assert (loaded.lang, loaded.n_tokens, loaded.example_ids) == ("en", stats.n_tokens, ids)
    assert loaded.meta == META
    for field in dataclasses.fields(ActivationStats):
        value, back = getattr(stats, field.name), getattr(loaded, field.name)
        if isinstance(value, torch.Tensor):
            assert back.dtype == value.dtype and torch.equal(back, value), field.name
        else:
            assert back == value, field.name
    assert_matches_oracle(loaded, loop_stats(acts, gates, ids))


def test_save_stats_and_load_stats_one_file_per_language(tmp_path):
    acts, gates, ids = _data(gated=True)
    en = as_stats(loop_stats(acts, gates, ids), "en")
    fr_acts, fr_gates, _ = _data(gated=True, seed=1)
    fr = as_stats(loop_stats(fr_acts, fr_gates, ids), "fr")
    save_stats({"fr": fr, "en": en}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["en.safetensors", "fr.safetensors"]
    everything = load_stats(tmp_path)
    assert list(everything) == ["en", "fr"]  # sorted by file name when langs is not given
    assert torch.equal(everything["fr"].m2, fr.m2) and torch.equal(everything["en"].m2, en.m2)
    assert list(load_stats(tmp_path, ["fr"])) == ["fr"]
    with pytest.raises(FileNotFoundError, match="no stats for de"):
        load_stats(tmp_path, ["en", "de"])
