"""Tests for collect(residual=True) (activations/residual.py, sampling.py) against an unpadded,
one-example-at-a-time ``run_with_cache`` oracle on the tiny gated (Gemma 3) and plain (GPT-2)
models. Residuals are compared at the "fp32" tolerance of tests/utils.py (rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

import importlib

import pytest
import torch

from mlinguality.activations.batching import plan_batches, tokenize_texts
from mlinguality.activations.collect import collect
from mlinguality.activations.residual import ResidualRecorder
from mlinguality.activations.stats import ActivationStats, ProvenanceError, load_stats, save_stats
from mlinguality.errors import MlingualityError
from tests.activations.test_collect import TEXTS, ListCorpus, long_corpus
from tests.utils import assert_close

MLP_FIELDS = ("sum", "m2", "n_positive", "max", "n_gate_positive", "example_n_tokens")
MLP_FIELDS += ("example_mean", "example_frac_positive", "example_frac_gate_positive")
RESID_FIELDS = ("example_resid_mean", "lens_resid", "lens_next", "lens_where")

# the module, not the function that mlinguality.activations exports under the same name
collect_module = importlib.import_module("mlinguality.activations.collect")
_ORACLE: dict = {}


def oracle(model, text: str) -> tuple[list[int], torch.Tensor]:
    """Token ids and ``hook_resid_post`` of every layer, ``[pos, layer, d_model]``, of ``text``
    run alone (no padding, no attention mask), through the bridge's own cache."""
    key = (id(model), text)
    if key not in _ORACLE:
        ids = model.tokenizer(text).input_ids
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([ids]))
        layers = range(model.cfg.n_layers)
        resid = torch.stack([cache[f"blocks.{L}.hook_resid_post"][0] for L in layers], dim=1)
        _ORACLE[key] = (list(ids), resid.double())
    return _ORACLE[key]


def counted(n: int, positions: str) -> list[int]:
    """The counted positions of an n-token text (BOS, at 0, excluded), chosen in Python."""
    return list(range(1, n)) if positions == "all" else [n - 1]


def eligible_pairs(model, texts: list[str], positions: str) -> list[tuple[int, int]]:
    """Every (example, position) a lens may sample: counted, and not the example's last token."""
    pairs = []
    for example, text in enumerate(texts):
        n = len(oracle(model, text)[0])
        pairs += [(example, pos) for pos in counted(n, positions) if pos < n - 1]
    return pairs


@pytest.mark.parametrize("batch_tokens", [64, 4096])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("positions", ["all", "last"])
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_gpt2"])
def test_residuals_equal_the_unpadded_cache(
    request, fixture, positions, padding_side, batch_tokens
):
    model = request.getfixturevalue(fixture)
    stats = collect(
        model,
        ListCorpus(TEXTS),
        positions=positions,
        padding_side=padding_side,
        batch_tokens=batch_tokens,
        residual=True,
        lens_positions=40,
        progress=False,
    )
    for lang, texts in TEXTS.items():
        lang_stats = stats[lang]
        expected_means = []
        for text in texts:
            _, resid = oracle(model, text)
            expected_means.append(resid[counted(resid.shape[0], positions)].mean(0))
        assert lang_stats.example_resid_mean.dtype == torch.float32
        assert_close(lang_stats.example_resid_mean, torch.stack(expected_means).float(), "fp32")
        pairs = eligible_pairs(model, texts, positions)
        where = [tuple(pair) for pair in lang_stats.lens_where.tolist()]
        assert len(where) == min(40, len(pairs)) and set(where) <= set(pairs)
        assert where == sorted(set(where))  # sorted by (example, position), no repeats
        if positions == "last":
            assert where == []  # a last token has no next token
        for row, (example, pos) in enumerate(where):
            ids, resid = oracle(model, texts[example])
            assert lang_stats.lens_next[row].item() == ids[pos + 1]
            assert_close(lang_stats.lens_resid[row], resid[pos].float(), "fp32")


def test_the_sample_does_not_depend_on_batching_and_covers_everything_when_small(tiny_model):
    corpus = ListCorpus(TEXTS)
    runs = [
        collect(
            tiny_model,
            corpus,
            ["ru"],
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            padding_side=side,
            residual=True,
            lens_positions=25,
            progress=False,
        )["ru"]
        for batch_tokens, max_batch_size, side in [
            (64, 1, "right"),
            (4096, 64, "left"),
            (200, 3, "right"),
        ]
    ]
    for run in runs[1:]:
        assert torch.equal(run.lens_where, runs[0].lens_where)
        assert torch.equal(run.lens_next, runs[0].lens_next)
        assert_close(run.lens_resid, runs[0].lens_resid, "fp32")
    other_seed = collect(
        tiny_model, corpus, ["ru"], residual=True, lens_positions=25, lens_seed=1, progress=False
    )["ru"]
    assert not torch.equal(other_seed.lens_where, runs[0].lens_where)
    everything = collect(
        tiny_model, corpus, ["ru"], residual=True, lens_positions=10**6, progress=False
    )["ru"]
    expected = eligible_pairs(tiny_model, TEXTS["ru"], "all")
    assert [tuple(pair) for pair in everything.lens_where.tolist()] == expected
    none = collect(tiny_model, corpus, ["ru"], residual=True, lens_positions=0, progress=False)
    assert none["ru"].lens_resid.shape == (0, tiny_model.cfg.n_layers, tiny_model.cfg.d_model)


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_gpt2"])
def test_mlp_statistics_are_the_same_with_and_without_residual(request, fixture):
    model = request.getfixturevalue(fixture)
    corpus = ListCorpus(TEXTS)
    plain = collect(model, corpus, per_example=True, batch_tokens=64, progress=False)
    both = collect(model, corpus, per_example=True, batch_tokens=64, residual=True, progress=False)
    for lang in TEXTS:
        assert plain[lang].n_tokens == both[lang].n_tokens
        for name in MLP_FIELDS:
            a, b = getattr(plain[lang], name), getattr(both[lang], name)
            assert (a is None and b is None) or torch.equal(a, b), name
        assert all(getattr(plain[lang], name) is None for name in RESID_FIELDS)
        assert "residual" not in plain[lang].meta  # MLP-only metadata as before


def test_the_forward_reaches_the_last_resid_post_but_not_the_unembedding(tiny_model):
    calls, norm = [], []
    head = tiny_model.original_model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    final = tiny_model.original_model.model.norm.register_forward_hook(lambda *a: norm.append(1))
    try:
        collect(tiny_model, ListCorpus(TEXTS), residual=True, progress=False)
    finally:
        head.remove()
        final.remove()
    assert calls == [] and norm == []
    assert all(not hook.fwd_hooks for hook in tiny_model.hook_dict.values())


def test_save_load_round_trip_and_mlp_only_files_still_load(tiny_model, tmp_path):
    stats = collect(tiny_model, ListCorpus(TEXTS), residual=True, lens_positions=30, progress=False)
    save_stats(stats, tmp_path / "resid")
    loaded = load_stats(tmp_path / "resid")
    for lang in TEXTS:
        assert loaded[lang].meta == stats[lang].meta
        for name in RESID_FIELDS:
            assert torch.equal(getattr(loaded[lang], name), getattr(stats[lang], name)), name
    plain = collect(tiny_model, ListCorpus(TEXTS), ["en"], progress=False)["en"]
    again = ActivationStats.load(plain.save(tmp_path / "plain.safetensors"))
    assert all(getattr(again, name) is None for name in RESID_FIELDS)


def test_shards_merge_to_the_single_pass_sample(tiny_model):
    corpus = ListCorpus(TEXTS)
    kwargs = {"residual": True, "lens_positions": 20, "progress": False}
    full = collect(tiny_model, corpus, **kwargs)
    head = ListCorpus({lang: texts[:2] for lang, texts in TEXTS.items()}, ids=["ex0", "ex1"])
    tail = ListCorpus({lang: texts[2:] for lang, texts in TEXTS.items()}, ids=["ex2", "ex3", "ex4"])
    first, second = collect(tiny_model, head, **kwargs), collect(tiny_model, tail, **kwargs)
    for lang in TEXTS:
        for merged in (
            first[lang].merge(second[lang]),
            second[lang].merge(first[lang]).reorder([3, 4, 0, 1, 2]),  # back to ex0..ex4
        ):
            assert merged.example_ids == full[lang].example_ids
            assert torch.equal(merged.lens_where, full[lang].lens_where)
            assert torch.equal(merged.lens_next, full[lang].lens_next)
            assert_close(merged.lens_resid, full[lang].lens_resid, "fp32")
            assert_close(merged.example_resid_mean, full[lang].example_resid_mean, "fp32")


def test_merge_refuses_residual_with_mlp_only_statistics(tiny_model):
    head = ListCorpus({"en": TEXTS["en"][:2]}, ids=["ex0", "ex1"])
    tail = ListCorpus({"en": TEXTS["en"][2:]}, ids=["ex2", "ex3", "ex4"])
    with_resid = collect(tiny_model, head, residual=True, progress=False)["en"]
    without = collect(tiny_model, tail, progress=False)["en"]
    with pytest.raises(ProvenanceError, match="residual differs"):
        with_resid.merge(without)
    other_k = collect(tiny_model, tail, residual=True, lens_positions=3, progress=False)["en"]
    with pytest.raises(ProvenanceError, match="lens_positions differs"):
        with_resid.merge(other_k)


@pytest.mark.parametrize("lag", [0, 1])  # 1: results land a batch late, as on CUDA
def test_a_resumed_residual_collection_equals_an_uninterrupted_one(
    tiny_model, tmp_path, monkeypatch, lag
):
    corpus = long_corpus()
    kwargs = {"residual": True, "lens_positions": 64, "batch_tokens": 64, "progress": False}
    texts = tokenize_texts(tiny_model.tokenizer, corpus.texts("en"))
    n_batches = len(plan_batches([len(text.ids) for text in texts], batch_tokens=64))
    forward, calls = collect_module.forward_to_last_hook, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) > n_batches // 2:
            raise KeyboardInterrupt
        return forward(*args, **kw)

    monkeypatch.setattr(ResidualRecorder, "lag", lag)
    monkeypatch.setattr(collect_module, "forward_to_last_hook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(
            tiny_model, corpus, ["en"], checkpoint_dir=tmp_path, checkpoint_every_s=0.0, **kwargs
        )
    monkeypatch.setattr(collect_module, "forward_to_last_hook", forward)
    partial = ActivationStats.load(tmp_path / "en.safetensors")
    assert 0 < partial.meta["batches_done"] < n_batches
    resumed = collect(tiny_model, corpus, ["en"], checkpoint_dir=tmp_path, **kwargs)["en"]
    monkeypatch.setattr(ResidualRecorder, "lag", 0)
    fresh = collect(tiny_model, corpus, ["en"], **kwargs)["en"]
    for name in RESID_FIELDS:
        assert torch.equal(getattr(resumed, name), getattr(fresh, name)), name
    with pytest.raises(MlingualityError, match="other settings \\(lens_seed\\)"):
        collect(tiny_model, corpus, ["en"], checkpoint_dir=tmp_path, lens_seed=5, **kwargs)


def test_all_reduce_puts_the_lens_sample_in_corpus_order(tiny_model, tmp_path):
    """One gloo rank holding the examples in reverse order (the remapping a shard needs)."""
    import torch.distributed as dist

    from mlinguality.activations.distributed import all_reduce_stats

    kwargs = {"residual": True, "lens_positions": 20, "progress": False}
    full = collect(tiny_model, ListCorpus(TEXTS), ["en"], **kwargs)["en"]
    backwards = ListCorpus({"en": TEXTS["en"][::-1]}, ids=[f"ex{i}" for i in range(4, -1, -1)])
    local = collect(tiny_model, backwards, ["en"], **kwargs)["en"]
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        result = all_reduce_stats(local, [[4, 3, 2, 1, 0]], torch.device("cpu"))
    finally:
        dist.destroy_process_group()
    assert result.example_ids == full.example_ids
    assert torch.equal(result.lens_where, full.lens_where)
    assert torch.equal(result.lens_next, full.lens_next)
    assert_close(result.lens_resid, full.lens_resid, "fp32")
    assert_close(result.example_resid_mean, full.example_resid_mean, "fp32")
