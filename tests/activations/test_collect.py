"""Tests for mlinguality/activations/collect.py against a naive, unbatched loop over the raw cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import torch

from mlinguality.activations.batching import plan_batches, tokenize_texts
from mlinguality.activations.collect import collect, word_final_prefix_loop
from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from tests.utils import TOLERANCES, assert_close

TEXTS = {
    "en": [
        "Blessed are the peacemakers: for they shall be called the children of God.",
        "In the beginning God created the heaven and the earth.",
        "Jesus wept.",
        "And God said, Let there be light: and there was light.",
        "Amen.",
    ],
    "ru": [
        "Блаженны миротворцы, ибо они будут наречены сынами Божиими.",
        "В начале сотворил Бог небо и землю.",
        "Иисус прослезился.",
        "И сказал Бог: да будет свет. И стал свет.",
        "Аминь.",
    ],
    "hi": [
        "धन्य हैं वे, जो मेल करवानेवाले हैं",
        "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।",
        "यीशु रोया।",
        "तब परमेश्वर ने कहा, उजियाला हो, तो उजियाला हो गया।",
        "आमीन।",
    ],
}


@dataclass
class ListCorpus:
    """The slice of the ParallelCorpus interface that collect() uses."""

    texts_by_lang: dict[str, list[str]]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(next(iter(self.texts_by_lang.values())))
        self.ids = self.ids or [f"ex{i}" for i in range(n)]

    @property
    def langs(self):
        return list(self.texts_by_lang)

    def texts(self, lang):
        return self.texts_by_lang[lang]


def naive_stats(model, texts, lang, positions="all", include_bos=False) -> ActivationStats:
    """Oracle: one text at a time, full forward, raw cache, explicit Python position choice;
    every statistic from the concatenated kept activations in float64 (two-pass variance)."""
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    gated = "blocks.0.mlp.hook_pre_linear" in model.hook_dict
    stats = ActivationStats.empty(lang, n_layers, d_mlp, gated)
    means, fracs, gate_fracs, counts, kept_acts = [], [], [], [], []
    for text in texts:
        encoded = model.tokenizer(text, return_offsets_mapping=True)
        ids = torch.tensor([encoded.input_ids])
        # without no_grad the shared GPT-2 keeps a non-leaf tensor and a later deepcopy fails
        with torch.no_grad():
            _, cache = model.run_with_cache(ids)
        n = ids.shape[1]
        if positions == "all":
            keep = list(range(0 if include_bos else 1, n))
        elif positions == "last":
            keep = [n - 1]
        else:  # word_final, computed independently: last token starting before each word end
            starts = [s for s, _ in encoded.offset_mapping]
            keep = []
            for match in re.finditer(r"\S+", text):
                candidates = [i for i in range(1, n) if starts[i] < match.end()]
                if candidates and candidates[-1] not in keep:
                    keep.append(candidates[-1])
        acts = torch.stack([cache[f"blocks.{L}.mlp.hook_post"][0, keep] for L in range(n_layers)])
        acts = acts.double()  # [layer, kept, d_mlp]
        kept_acts.append(acts)
        stats.n_positive += (acts > 0).sum(1)
        stats.max = torch.maximum(stats.max, acts.amax(1).float())
        if gated:
            pre = torch.stack([cache[f"blocks.{L}.mlp.hook_pre"][0, keep] for L in range(n_layers)])
            stats.n_gate_positive += (pre > 0).sum(1)
            gate_fracs.append((pre > 0).double().mean(1))
        means.append(acts.mean(1))
        fracs.append((acts > 0).double().mean(1))
        counts.append(len(keep))
    every = torch.cat(kept_acts, dim=1)  # [layer, token, d_mlp]
    stats.n_tokens = every.shape[1]
    stats.sum = every.sum(1)
    stats.m2 = ((every - every.mean(1, keepdim=True)) ** 2).sum(1)
    stats.example_mean = torch.stack(means).float()
    stats.example_frac_positive = torch.stack(fracs).float()
    stats.example_frac_gate_positive = torch.stack(gate_fracs).float() if gated else None
    stats.example_n_tokens = torch.tensor(counts)
    return stats


def assert_counts_equal(actual, expected, kind: str) -> None:
    """Counts of activation > 0 match exactly, except for a real model compared across batch
    shapes ("fp32_model"): there float32 reordering can flip the sign of a near-zero activation,
    so at most 2 flips per neuron and 1 in 10,000 (neuron, token) cells overall are allowed."""
    if kind != "fp32_model":
        assert torch.equal(actual, expected)
        return
    diff = (actual - expected).abs()
    assert diff.max() <= 2, f"a neuron's count moved by {diff.max()}"
    assert diff.sum() <= 1e-4 * expected.sum(), f"{diff.sum()} count flips in all"


def assert_stats_equal(actual: ActivationStats, expected: ActivationStats, kind="fp32"):
    assert actual.n_tokens == expected.n_tokens
    assert_close(actual.sum, expected.sum, kind)
    assert_close(actual.m2, expected.m2, kind)
    assert_counts_equal(actual.n_positive, expected.n_positive, kind)
    assert_close(actual.max, expected.max, kind)
    if expected.n_gate_positive is not None:
        assert_counts_equal(actual.n_gate_positive, expected.n_gate_positive, kind)
    if expected.example_mean is not None and actual.example_mean is not None:
        assert torch.equal(actual.example_n_tokens, expected.example_n_tokens)
        assert_close(actual.example_mean, expected.example_mean, kind)
        if kind == "fp32_model":  # a flip moves a share by 1/n_tokens of that example
            flips = (actual.example_frac_positive - expected.example_frac_positive).abs()
            per_token = 1.0 / actual.example_n_tokens.clamp_min(1).float()[:, None, None]
            assert (flips <= 2 * per_token + 1e-6).all()
        else:
            assert_close(actual.example_frac_positive, expected.example_frac_positive, kind)
        if expected.example_frac_gate_positive is not None:
            gate = (actual.example_frac_gate_positive - expected.example_frac_gate_positive).abs()
            if kind == "fp32_model":
                per_token = 1.0 / actual.example_n_tokens.clamp_min(1).float()[:, None, None]
                assert (gate <= 2 * per_token + 1e-6).all()
            else:
                assert gate.max() <= TOLERANCES[kind]["atol"]
        else:
            assert actual.example_frac_gate_positive is None


@pytest.mark.parametrize("positions", ["all", "last", "word_final"])
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_gpt2"])
def test_stats_equal_naive_unbatched_loop(request, fixture, positions):
    model = request.getfixturevalue(fixture)
    corpus = ListCorpus(TEXTS)
    stats = collect(
        model, corpus, positions=positions, per_example=True, batch_tokens=64, progress=False
    )
    for lang in TEXTS:
        assert_stats_equal(stats[lang], naive_stats(model, TEXTS[lang], lang, positions))
        assert stats[lang].example_ids == corpus.ids


def test_include_bos_counts_one_more_position_per_example(tiny_model):
    corpus = ListCorpus(TEXTS)
    with_bos = collect(tiny_model, corpus, ["en"], include_bos=True, progress=False)["en"]
    without = collect(tiny_model, corpus, ["en"], progress=False)["en"]
    assert with_bos.n_tokens == without.n_tokens + len(TEXTS["en"])
    assert_stats_equal(with_bos, naive_stats(tiny_model, TEXTS["en"], "en", include_bos=True))


@pytest.mark.parametrize("positions", ["all", "word_final"])
def test_left_right_padding_and_batch_size_one_agree(tiny_model, positions):
    corpus = ListCorpus(TEXTS)
    kwargs = dict(positions=positions, per_example=True, progress=False)
    right = collect(tiny_model, corpus, padding_side="right", **kwargs)
    left = collect(tiny_model, corpus, padding_side="left", **kwargs)
    single = collect(tiny_model, corpus, max_batch_size=1, **kwargs)
    for lang in TEXTS:
        assert_stats_equal(left[lang], right[lang])
        assert_stats_equal(single[lang], right[lang])


def test_word_final_one_pass_equals_prefix_loop(tiny_model):
    for lang, texts in TEXTS.items():
        for text in texts:
            expected = word_final_prefix_loop(tiny_model, text)  # [word, layer, d_mlp]
            stats = collect(
                tiny_model,
                ListCorpus({lang: [text]}),
                positions="word_final",
                per_example=True,
                progress=False,
            )[lang]
            n_words = len(text.split())
            assert expected.shape[0] == n_words
            assert (
                stats.n_tokens == n_words
            )  # the tiny byte-level tokenizer never merges across spaces
            assert_close(stats.sum.float(), expected.sum(0), "fp32")


def test_gate_hook_is_the_gate_pre_activation(tiny_model):
    """hook_pre (counted for LAPE) is gate_proj(x) of the plain transformers MLP."""
    hf_mlp = tiny_model.original_model.model.layers[1].mlp
    captured = {}
    handle = hf_mlp.gate_proj.register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("gate", output.detach())
    )
    ids = tiny_model.tokenizer(TEXTS["ru"][0], return_tensors="pt").input_ids
    try:
        _, cache = tiny_model.run_with_cache(
            ids, names_filter=lambda n: n == "blocks.1.mlp.hook_pre"
        )
    finally:
        handle.remove()
    assert_close(cache["blocks.1.mlp.hook_pre"], captured["gate"], "fp32")


def test_forward_stops_before_the_unembedding_and_hooks_are_removed(tiny_model):
    calls = []
    handle = tiny_model.original_model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        collect(tiny_model, ListCorpus(TEXTS), progress=False)
    finally:
        handle.remove()
    assert calls == []
    assert all(not hook.fwd_hooks for hook in tiny_model.hook_dict.values())
    tiny_model(torch.tensor([[2, 5, 6]]))  # still a working model afterwards


def test_shards_merge_to_the_single_pass(tiny_model):
    full = collect(tiny_model, ListCorpus(TEXTS), per_example=True, progress=False)
    head = ListCorpus({lang: texts[:2] for lang, texts in TEXTS.items()}, ids=["ex0", "ex1"])
    tail = ListCorpus({lang: texts[2:] for lang, texts in TEXTS.items()}, ids=["ex2", "ex3", "ex4"])
    first = collect(tiny_model, head, per_example=True, progress=False)
    second = collect(tiny_model, tail, per_example=True, progress=False)
    for lang in TEXTS:
        merged = first[lang].merge(second[lang])
        assert merged.example_ids == full[lang].example_ids
        assert_stats_equal(merged, full[lang])


def test_save_load_round_trip(tiny_model, tmp_path):
    stats = collect(tiny_model, ListCorpus(TEXTS), ["hi"], per_example=True, progress=False)["hi"]
    loaded = ActivationStats.load(stats.save(tmp_path / "hi.safetensors"))
    assert loaded.meta == stats.meta and loaded.example_ids == stats.example_ids
    assert_stats_equal(loaded, stats, "exact")


def test_bad_positions_is_a_one_line_error(tiny_model):
    with pytest.raises(MlingualityError, match="positions: unknown 'first'"):
        collect(tiny_model, ListCorpus(TEXTS), positions="first", progress=False)


def test_checkpoint_with_other_settings_is_refused(tiny_model, tmp_path):
    corpus = ListCorpus(TEXTS)
    collect(tiny_model, corpus, ["en"], checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(MlingualityError, match="other settings \\(positions\\)"):
        collect(
            tiny_model, corpus, ["en"], positions="last", checkpoint_dir=tmp_path, progress=False
        )


_RESUME_SCRIPT = """
import sys, torch
from mlinguality import TinyModelConfig, load_model
from mlinguality.activations.collect import collect
from tests.activations.test_collect import ListCorpus, long_corpus
torch.set_num_threads(1)
model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
collect(model, long_corpus(), per_example=True, batch_tokens=64, checkpoint_dir=sys.argv[1],
        checkpoint_every_s=0.0, progress=False)
"""


def long_corpus() -> ListCorpus:
    texts = {lang: [f"{t} {i}" for i in range(40) for t in texts] for lang, texts in TEXTS.items()}
    return ListCorpus(texts)


def test_resume_after_kill_9_equals_uninterrupted_run(tiny_model, tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    process = subprocess.Popen([sys.executable, "-c", _RESUME_SCRIPT, str(checkpoint_dir)], env=env)
    deadline = time.monotonic() + 120
    while not (checkpoint_dir / "ru.safetensors").exists():  # en done, ru under way
        assert process.poll() is None, "the collection ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = ActivationStats.load(checkpoint_dir / "ru.safetensors")
    # a checkpoint file is only written after a batch, so "> 0" always held; what the test needs
    # is a kill mid-language: some of ru's batches done, not all (or it proves nothing)
    texts = tokenize_texts(tiny_model.tokenizer, long_corpus().texts("ru"))
    n_batches = len(plan_batches([len(text.ids) for text in texts], batch_tokens=64))
    assert 0 < partial.meta["batches_done"] < n_batches, (partial.meta["batches_done"], n_batches)
    resumed = collect(
        tiny_model,
        long_corpus(),
        per_example=True,
        batch_tokens=64,
        checkpoint_dir=checkpoint_dir,
        progress=False,
    )
    fresh = collect(tiny_model, long_corpus(), per_example=True, batch_tokens=64, progress=False)
    for lang in TEXTS:
        assert_stats_equal(resumed[lang], fresh[lang], "exact")


def test_bfloat16_model_collects_float_statistics_close_to_float32():
    """A bf16 model (as a GPU user would run it) gives float64/float32 statistics within bf16
    precision of the fp32 model's (rtol 5e-2 on sums: bf16 keeps 8 mantissa bits)."""
    from mlinguality import TinyModelConfig, load_model

    corpus = ListCorpus(TEXTS)
    fp32 = collect(load_model(TinyModelConfig(seed=2)), corpus, ["en"], progress=False)["en"]
    bf16_model = load_model(TinyModelConfig(seed=2), dtype="bfloat16")
    bf16 = collect(bf16_model, corpus, ["en"], progress=False)["en"]
    assert bf16.sum.dtype == torch.float64 and bf16.max.dtype == torch.float32
    assert bf16.meta["dtype"] == "torch.bfloat16"
    assert bf16.n_tokens == fp32.n_tokens
    scale = fp32.sum.abs().max()
    torch.testing.assert_close(bf16.sum, fp32.sum, rtol=5e-2, atol=5e-2 * scale.item())


def test_variance_stays_accurate_at_mean_over_sd_400(tiny_model):
    """Shift the last layer's hook_post by 400 standard deviations: its variance must not move.

    The last layer, so that the shift changes nothing downstream of what is measured. The
    oracle is the variance of the unshifted activations (the float32 rounding of the shifted
    values adds ~1e-9 relative). A raw float32 sum of squares (sum_sq - sum**2/n) is off by
    percent at this ratio; centred batch sums combined by Chan's update stay within 1e-4.
    """
    corpus = ListCorpus(TEXTS)
    plain = collect(tiny_model, corpus, ["en"], batch_tokens=64, progress=False)["en"]
    last = tiny_model.cfg.n_layers - 1
    offset = 400 * plain.var[last].sqrt().float()
    hooks = [(f"blocks.{last}.mlp.hook_post", lambda acts, hook: acts + offset)]
    with tiny_model.hooks(fwd_hooks=hooks):
        shifted = collect(tiny_model, corpus, ["en"], batch_tokens=64, progress=False)["en"]
    ratio = (shifted.mean[last] / shifted.var[last].sqrt()).median()
    assert ratio > 300, f"the test lost its point: mean/sd {ratio:.0f}"
    torch.testing.assert_close(shifted.var, plain.var, rtol=1e-4, atol=0)


@pytest.mark.parametrize("field", ["model", "dtype", "positions", "include_bos", "hook"])
def test_merge_refuses_other_provenance_naming_the_field(tiny_model, field):
    head = ListCorpus({"en": TEXTS["en"][:2]}, ids=["ex0", "ex1"])
    tail = ListCorpus({"en": TEXTS["en"][2:]}, ids=["ex2", "ex3", "ex4"])
    first = collect(tiny_model, head, progress=False)["en"]
    second = collect(tiny_model, tail, progress=False)["en"]
    first.merge(second)  # the same provenance merges
    second.meta[field] = "something else"
    with pytest.raises(MlingualityError, match=f"^cannot merge en statistics: {field} differs"):
        first.merge(second)


def test_merge_refuses_stats_of_other_positions(tiny_model):
    head = ListCorpus({"en": TEXTS["en"][:2]}, ids=["ex0", "ex1"])
    tail = ListCorpus({"en": TEXTS["en"][2:]}, ids=["ex2", "ex3", "ex4"])
    first = collect(tiny_model, head, positions="last", progress=False)["en"]
    second = collect(tiny_model, tail, positions="all", progress=False)["en"]
    with pytest.raises(MlingualityError, match="positions differs \\('last' vs 'all'\\)"):
        first.merge(second)


def test_format_1_files_with_a_raw_sum_of_squares_still_load(tiny_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    stats = collect(tiny_model, ListCorpus(TEXTS), ["en"], progress=False)["en"]
    path = stats.save(tmp_path / "en.safetensors")
    tensors = load_file(str(path))
    tensors["sum_sq"] = tensors.pop("m2") + tensors["sum"] ** 2 / stats.n_tokens
    with safe_open(str(path), framework="pt") as opened:  # keep the header, mark it format 1
        header = dict(opened.metadata(), format="1")
    save_file(tensors, str(path), metadata=header)
    old = ActivationStats.load(path)
    assert_close(old.var, stats.var, "fp32")
    assert_close(old.sum, stats.sum, "exact")
