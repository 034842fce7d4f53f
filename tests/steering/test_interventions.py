"""Tests for mlinguality/steering/interventions.py against a plain transformers oracle."""

from __future__ import annotations

import copy

import pytest
import torch

from mlinguality.ablation.hooks import ablate, mask_from_pairs
from mlinguality.activations.stats import ActivationStats
from mlinguality.steering.interventions import (
    Intervention,
    SteeringError,
    SteeringWindow,
    activation_values,
    deactivation_values,
    language_intervention,
    steer,
    steering_hooks,
)
from tests.utils import assert_close

SENTENCE = "Blessed are the peacemakers: for they shall be called the children of God."


def _ids(model, text: str = SENTENCE) -> torch.Tensor:
    return model.tokenizer([text], return_tensors="pt")["input_ids"]


def _mlp_out(hf, layer: int):
    """The module whose input is blocks.{layer}.mlp.hook_post in the plain model."""
    if hasattr(hf, "model"):
        return hf.model.layers[layer].mlp.down_proj
    return hf.transformer.h[layer].mlp.c_proj


def oracle_logits(model, ids, mask, target, alpha, columns=None):
    """Plain transformers copy with a pre-hook on W_out: a -> a + alpha (t - a) at ``columns``."""
    hf = copy.deepcopy(model.original_model)

    def edit(layer):
        def hook(module, inputs):
            x = inputs[0].clone()
            n = mask[layer]
            cols = slice(None) if columns is None else columns
            a = x[:, cols][..., n]
            x[:, cols, n] = a + alpha * (target[layer, n] - a)
            return (x,)

        return hook

    for layer in range(model.cfg.n_layers):
        if mask[layer].any():
            _mlp_out(hf, layer).register_forward_pre_hook(edit(layer))
    with torch.no_grad():
        return hf(ids).logits


@pytest.fixture(params=["gemma3", "gpt2"])
def arch_model(request, tiny_model, tiny_gpt2):
    return tiny_model if request.param == "gemma3" else tiny_gpt2


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_steering_equals_a_pre_hook_on_w_out_of_the_plain_model(arch_model, alpha):
    model = arch_model
    mask = mask_from_pairs([(0, 2), (0, 9), (1, 30), (1, 63)], 2, model.cfg.d_mlp)
    target = torch.randn(2, model.cfg.d_mlp) * 2
    ids = _ids(model)
    expected = oracle_logits(model, ids, mask, target, alpha)
    with steer(model, Intervention(mask, target, alpha)) as hooks, torch.no_grad():
        actual = model(ids)
    assert_close(actual, expected, "fp32_model")
    with torch.no_grad():
        plain = model(ids)
    assert (actual - plain).abs().max() > 1e-3, "the intervention must matter"
    assert hooks.records[0].n_written == 2 * ids.shape[1]
    assert hooks.records[0].n_changed == 2 * ids.shape[1]


def test_alpha_one_is_value_ablation_and_alpha_zero_a_checked_no_op(tiny_model):
    mask = mask_from_pairs([(0, 5), (1, 11)], 2, 64)
    target = torch.randn(2, 64)
    ids = _ids(tiny_model)
    with ablate(tiny_model, mask, mode="values", values=target), torch.no_grad():
        ablated = tiny_model(ids)
    with steer(tiny_model, Intervention(mask, target, 1.0)), torch.no_grad():
        steered = tiny_model(ids)
    assert_close(steered, ablated, "exact")
    with steer(tiny_model, Intervention(mask, target, 0.0)) as hooks, torch.no_grad():
        same = tiny_model(ids)
    with torch.no_grad():
        assert_close(same, tiny_model(ids), "exact")
    assert hooks.records[1].calls == 1 and hooks.records[1].n_changed == 0


def test_run_with_hooks_and_verify(tiny_model):
    mask = mask_from_pairs([(1, 3)], 2, 64)
    hooks = steering_hooks(tiny_model, Intervention(mask, torch.ones(2, 64)))
    with pytest.raises(SteeringError, match="never fired"):
        hooks.verify()
    with torch.no_grad():
        tiny_model.run_with_hooks(_ids(tiny_model), fwd_hooks=hooks)
    hooks.verify()
    assert hooks.records[1].calls == 1
    intervention = Intervention(mask, torch.ones(2, 64))
    with (
        pytest.raises(SteeringError, match="never fired"),
        steer(tiny_model, intervention),
        torch.no_grad(),
    ):
        tiny_model(_ids(tiny_model), stop_at_layer=1)


def test_prompt_and_generated_columns_in_a_full_forward_window(tiny_model):
    """Without a cache, a window of prompt length P writes columns 1..P-1 ("prompt", BOS left
    alone) or P.. ("generated"): the oracle writes exactly those columns of the plain model."""
    mask = mask_from_pairs([(0, 1), (1, 2), (1, 40)], 2, 64)
    target = torch.full((2, 64), 3.0)
    ids = _ids(tiny_model)
    n_prompt = 5
    writable = torch.ones(1, n_prompt, dtype=torch.bool)
    writable[0, 0] = False  # BOS
    for positions, columns in (
        ("prompt", slice(1, n_prompt)),
        ("generated", slice(n_prompt, None)),
    ):
        expected = oracle_logits(tiny_model, ids, mask, target, 1.0, columns)
        hooks = steering_hooks(tiny_model, Intervention(mask, target), positions)
        hooks.window.begin(writable, cached=False)
        with torch.no_grad():
            actual = tiny_model.run_with_hooks(ids, fwd_hooks=hooks)
        hooks.verify()
        assert_close(actual, expected, "fp32_model")
        n_cols = n_prompt - 1 if positions == "prompt" else ids.shape[1] - n_prompt
        assert hooks.records[1].n_written == 2 * n_cols


def test_window_columns_with_and_without_cache():
    writable = torch.tensor([[False, True, True], [False, False, True]])  # row 1 left-padded
    window = SteeringWindow()
    with pytest.raises(SteeringError, match="needs a steering window"):
        window.columns("prompt", (2, 3), "cpu")
    window.begin(writable, cached=True)
    window.tick(3)  # the prompt pass
    assert window.columns("all", (2, 3), "cpu").tolist() == writable.tolist()
    assert not window.columns("generated", (2, 3), "cpu").any()
    window.tick(1)  # first generated token
    assert window.columns("generated", (2, 1), "cpu").tolist() == [[True], [True]]
    assert window.columns("prompt", (2, 1), "cpu").tolist() == [[False], [False]]
    window.begin(writable, cached=False)
    window.tick(5)  # full forward over prompt + 2 generated
    assert window.columns("all", (2, 5), "cpu").int().tolist() == [[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert window.columns("generated", (2, 5), "cpu").int().tolist() == [[0, 0, 0, 1, 1]] * 2


def _stats(lang: str, mean: float, example_means: list[float], max_value: float) -> ActivationStats:
    stats = ActivationStats.empty(lang, n_layers=1, d_mlp=3, gated=False)
    stats.n_tokens = 4
    stats.sum = torch.full((1, 3), mean * 4, dtype=torch.float64)
    stats.max = torch.full((1, 3), max_value)
    stats.example_mean = torch.tensor(example_means).view(-1, 1, 1).expand(-1, 1, 3).clone()
    return stats


def test_language_intervention_values_from_statistics():
    stats = {
        "en": _stats("en", 1.0, [0.0, 1.0, 2.0, 3.0, 4.0], 9.0),
        "fr": _stats("fr", 2.0, [1.0, 2.0], 5.0),
        "ru": _stats("ru", 4.0, [4.0], 6.0),
    }
    masks = {
        "en": torch.tensor([[True, True, False]]),
        "fr": torch.tensor([[False, True, True]]),  # neuron 1 shared: it is activated
        "ru": torch.tensor([[False, False, False]]),
    }
    both = language_intervention(stats, masks, "en", "fr", deactivate="mean", activate="mean")
    assert both.mask.tolist() == [[True, True, True]]
    assert both.target.tolist() == [[3.0, 2.0, 2.0]]  # (fr 2 + ru 4) / 2 for en's own neuron
    assert (both.n_source, both.n_target) == (1, 2)
    off = language_intervention(stats, masks, "en", "fr", deactivate="zero", activate=None)
    assert off.mask.tolist() == [[True, True, False]] and off.target.tolist() == [[0.0, 0.0, 0.0]]
    assert activation_values(stats, "en", "quantile", 0.75)[0, 0] == 3.0  # of 0..4
    assert activation_values(stats, "en", "max")[0, 2] == 9.0
    assert deactivation_values(stats, "ru", "mean")[0, 0] == 1.5
    with pytest.raises(SteeringError, match="deactivate= or activate="):
        language_intervention(stats, masks, "en", "fr", deactivate=None, activate=None)
    with pytest.raises(SteeringError, match="empty"):
        language_intervention(stats, masks, "ru", "ru", deactivate="zero", activate=None)
    with pytest.raises(SteeringError, match="not one of"):
        language_intervention(stats, masks, "en", "fr", activate="median")
