"""Tests for steering/directions.py, direction_hooks.py, direction_experiment.py and the LCB
line-level pass, against naive oracles on the tiny models: a run_with_cache mean per text, a
capture of every resid_post with and without the hook, and a full-forward greedy loop over the
plain model with a forward hook on the block."""

from __future__ import annotations

import copy

import pytest
import torch

from mlinguality.errors import MlingualityError
from mlinguality.steering.config import SteeringConfig
from mlinguality.steering.direction_experiment import direction_experiment
from mlinguality.steering.direction_hooks import (
    DirectionIntervention,
    direction_hooks,
    steer_direction,
)
from mlinguality.steering.directions import (
    default_direction_layers,
    direction_from_means,
    language_direction,
    language_means,
    random_direction,
)
from mlinguality.steering.experiment import result_rows, summarize
from mlinguality.steering.generation import generate, left_pad
from mlinguality.steering.interventions import SteeringError
from mlinguality.steering.language_id import LanguageIdentifier, line_languages, line_pass
from mlinguality.steering.plots import plot_methods
from tests.utils import assert_close

CORPUS = {
    "en": ["In the beginning God created the heaven", "Amen", "And God said, Let there be light"],
    "fr": ["Au commencement, Dieu créa", "Amen, amen", "Dieu dit: Que la lumière soit"],
}
PROMPTS = ["In the beginning God created", "Au commencement", "Selig sind die", "Блаженны"]
N_NEW = 5


@pytest.fixture(params=["gemma3", "gpt2"])
def arch_model(request, tiny_model, tiny_gpt2):
    return tiny_model if request.param == "gemma3" else tiny_gpt2


def _naive_mean(model, texts, layer, last=False):
    """Mean resid_post over each text's tokens but BOS (one unpadded text at a time)."""
    rows = []
    for text in texts:
        ids = model.tokenizer([text], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            _, cache = model.run_with_cache(ids)
        resid = cache[f"blocks.{layer}.hook_resid_post"][0]
        rows.append(resid[-1:] if last else resid[1:])
    return torch.cat(rows).double().mean(0)


def test_direction_equals_a_naive_run_with_cache_mean_difference(arch_model):
    model = arch_model
    directions = language_direction(model, CORPUS, "en", "fr", [0, 1], batch_tokens=24)
    for layer in (0, 1):
        expected = _naive_mean(model, CORPUS["fr"], layer) - _naive_mean(model, CORPUS["en"], layer)
        assert_close(directions[layer], expected.float(), "fp32")
    last = language_direction(model, CORPUS, "en", "fr", -1, positions="last")
    naive = _naive_mean(model, CORPUS["fr"], 1, True) - _naive_mean(model, CORPUS["en"], 1, True)
    assert_close(last, naive.float(), "fp32")
    means = language_means(model, CORPUS, ["en", "fr"], [1])
    assert_close(direction_from_means(means["fr"].at(1), means["en"].at(1)), directions[1], "fp32")
    n_en = sum(len(model.tokenizer(t).input_ids) - 1 for t in CORPUS["en"])
    assert means["en"].n_tokens == n_en
    with pytest.raises(MlingualityError, match="same language"):
        language_direction(model, CORPUS, "en", "en", 0)


def test_random_direction_has_equal_norm_and_is_seeded():
    direction = torch.arange(32, dtype=torch.float32) - 10.0
    first, again, other = (random_direction(direction, seed) for seed in (3, 3, 4))
    assert_close(first.norm(), direction.norm(), "fp32")
    assert torch.equal(first, again) and not torch.equal(first, other)
    cosine = torch.nn.functional.cosine_similarity(first, direction, dim=0)
    assert abs(float(cosine)) < 0.9
    assert default_direction_layers(18) == [4, 9, 13] and default_direction_layers(1) == [0]


def _captured(model, ids, extra_hooks=(), window=None):
    """Every layer's resid_post as the next layer reads it (a capture hook after the others)."""
    seen = {}

    def capture(resid, *, hook):
        seen[hook.name] = resid.detach().clone()

    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    hooks = list(extra_hooks) + [(name, capture) for name in names]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(ids)
    return [next(v for k, v in seen.items() if k.startswith(f"blocks.{i}.")) for i in range(2)]


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_hook_adds_alpha_times_direction_at_the_written_positions_only(tiny_model, positions):
    model, layer, alpha = tiny_model, 0, 1.7
    rows = [model.tokenizer(t).input_ids for t in ("Au commencement Dieu", "Amen amen amen")]
    ids, _, writable = left_pad(rows, pad=0)
    n_prompt = ids.shape[1] - 3  # the last three columns play the generated tokens
    direction = torch.randn(model.cfg.d_model)
    hooks = direction_hooks(model, DirectionIntervention(layer, direction, alpha), positions)
    hooks.window.begin(writable[:, :n_prompt], cached=False)
    steered = _captured(model, ids, hooks)
    plain = _captured(model, ids)
    hooks.verify()
    column = torch.arange(ids.shape[1])
    prompt = writable & (column < n_prompt)
    generated = (column >= n_prompt).expand_as(writable)
    expected_where = {"all": prompt | generated, "prompt": prompt, "generated": generated}
    where = expected_where[positions]
    diff = steered[layer] - plain[layer]
    assert_close(diff[where], (alpha * direction).expand(int(where.sum()), -1), "fp32")
    assert torch.equal(diff[~where], torch.zeros_like(diff[~where])), "nothing else moves"
    assert not where[:, 0].any() and hooks.record.n_written == int(where.sum())
    assert (steered[1] - plain[1]).abs().max() > 1e-4, "the next layer sees the push"


def _block(hf, layer):
    return hf.model.layers[layer] if hasattr(hf, "model") else hf.transformer.h[layer]


def oracle_generate(model, prompt_ids, n_new, layer, direction, alpha, positions="all"):
    """Greedy decoding of one unpadded prompt by full forward passes of the plain model, with
    alpha * direction added to block ``layer``'s output at the columns ``positions`` names."""
    hf = copy.deepcopy(model.original_model)
    n_prompt = len(prompt_ids)
    cols = {"all": slice(1, None), "prompt": slice(1, n_prompt)}.get(
        positions, slice(n_prompt, None)
    )

    def add(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, cols] += alpha * direction
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    _block(hf, layer).register_forward_hook(add)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(n_new):
            next_id = hf(ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, n_prompt:].tolist()


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_cached_generation_with_a_direction_equals_the_full_forward_loop(arch_model, positions):
    model = arch_model
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(5)) * 3
    intervention = DirectionIntervention(1, direction, alpha=2.0)
    runs = [
        generate(
            model,
            PROMPTS,
            max_new_tokens=N_NEW,
            stop_at_eos=False,
            batch_size=3,
            hooks=direction_hooks(model, intervention, positions),
            use_cache=cached,
        )
        for cached in (True, False)
    ]
    plain = generate(model, PROMPTS, max_new_tokens=N_NEW, stop_at_eos=False, batch_size=3)
    for prompt_ids, new_ids in zip(runs[0].prompt_ids, runs[0].new_ids, strict=True):
        assert new_ids == oracle_generate(model, prompt_ids, N_NEW, 1, direction, 2.0, positions)
    assert runs[0].new_ids == runs[1].new_ids
    assert runs[0].new_ids != plain.new_ids, "the direction must change some generation"


def test_alpha_zero_is_unsteered_generation_and_checked(tiny_model):
    direction = torch.randn(tiny_model.cfg.d_model) * 5
    hooks = direction_hooks(tiny_model, DirectionIntervention(0, direction, alpha=0.0))
    steered = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW, hooks=hooks)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW)
    assert steered.new_ids == plain.new_ids
    assert hooks.record.calls > 0 and hooks.record.n_written > 0 and hooks.record.n_wrong == 0


def test_direction_hooks_refuse_bad_input_and_verify_a_silent_hook(tiny_model):
    with pytest.raises(SteeringError, match="d_model"):
        direction_hooks(tiny_model, DirectionIntervention(0, torch.ones(5)))
    with pytest.raises(SteeringError, match="out of range"):
        direction_hooks(tiny_model, DirectionIntervention(7, torch.ones(32)))
    silent = DirectionIntervention(1, torch.ones(32))
    with pytest.raises(SteeringError, match="never fired"), steer_direction(tiny_model, silent):
        pass


class _KeywordIdentifier(LanguageIdentifier):
    """A stand-in identifier: "fr" for text with "Dieu", "en" with "God", else "de"."""

    def __init__(self) -> None:
        self.langs = ["fr", "en", "de"]

    def classify(self, text):
        if not any(c.isalpha() for c in text):
            return "", 0.0
        return ("fr" if "Dieu" in text else "en" if "God" in text else "de"), 1.0


def test_line_level_pass_rate_of_a_hand_computed_case():
    identifier = _KeywordIdentifier()
    responses = [
        "Et Dieu vit la lumière\nEt Dieu sépara la lumière",  # both lines fr: pass
        "Et Dieu vit la lumière\nAnd God saw the light",  # an English line: fail
        "Et Dieu vit la lumière\n12.\n\n- ok",  # short lines not judged: pass
        "Dieu dit",  # no line of 10 letters: judged whole, fr: pass
        "3:16 !",  # no letters: fail
        "",  # empty: fail
    ]
    langs = [line_languages(identifier, text) for text in responses]
    assert langs == [["fr", "fr"], ["fr", "en"], ["fr"], ["fr"], [], []]
    assert [line_pass(x, "fr") for x in langs] == [True, False, True, True, False, False]
    scored = [
        {
            "prompt_index": i,
            "prompt": "p",
            "text": text,
            "lang": identifier.classify(text)[0],
            "lang_prob": 1.0,
            "n_new_tokens": 3,
            "stopped": False,
            "bits_per_byte": 1.0,
            "distinct_2": 1.0,
            "line_langs": " ".join(x),
        }
        for i, (text, x) in enumerate(zip(responses, langs, strict=True))
    ]
    neurons = result_rows("en", "fr", "steer", 1.0, 0, scored, n_neurons=4)
    direction = result_rows("en", "fr", "direction", 1.0, 0, scored, layer=1, direction_norm=2.5)
    summary = summarize(neurons + direction)
    assert [s["method"] for s in summary] == ["neurons", "direction"]
    assert [s["line_pass_rate"] for s in summary] == [0.5, 0.5]  # 3 of 6, by hand
    assert summary[0]["share_target"] == 4 / 6  # the whole-text verdict is laxer: row 2 is fr
    assert summary[1]["layer"] == 1 and summary[1]["direction_norm"] == 2.5


def test_direction_experiment_rows_methods_and_plot(tiny_model, tmp_path):
    settings = SteeringConfig(
        alphas=[1.0],
        direction_layers=[1],
        direction_alphas=[0.0, 8.0],
        max_new_tokens=3,
        n_random=1,
        batch_size=2,
    )
    prompts = {"en": ["In the beginning", "And God said"], "fr": ["Au commencement", "Dieu dit"]}
    means = language_means(tiny_model, CORPUS, ["en", "fr"], [1])
    rows = direction_experiment(
        tiny_model, means, prompts, [("en", "fr")], settings, baseline=True, seed=1
    )
    # none + 2 alphas x (direction + 1 random direction), 2 prompts each
    assert len(rows) == (1 + 2 * 2) * 2
    assert {r["method"] for r in rows} == {"none", "direction", "random-direction"}
    by = {(r["condition"], r["alpha"], r["prompt_index"]): r for r in rows}
    assert [by[("direction", 0.0, i)]["text"] for i in range(2)] == [
        by[("none", 0.0, i)]["text"] for i in range(2)
    ]
    assert [by[("direction", 8.0, i)]["text"] for i in range(2)] != [
        by[("none", 0.0, i)]["text"] for i in range(2)
    ]
    norm = (means["fr"].at(1) - means["en"].at(1)).norm()
    assert by[("random-direction", 8.0, 0)]["direction_norm"] == pytest.approx(float(norm))
    summary = summarize(rows)
    assert [(s["method"], s["alpha"]) for s in summary] == [
        ("none", 0.0),
        ("direction", 0.0),
        ("random-direction", 0.0),
        ("direction", 8.0),
        ("random-direction", 8.0),
    ]
    assert plot_methods(summary, tmp_path / "m.png").stat().st_size > 1000


def test_direction_settings_are_checked():
    with pytest.raises(MlingualityError, match="direction_layers"):
        SteeringConfig(direction_layers=[])
    with pytest.raises(MlingualityError, match="direction_alphas"):
        SteeringConfig(direction_alphas=[float("nan")])
    assert SteeringConfig().directions is False
