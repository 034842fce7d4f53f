"""Tests for mlinguality/ablation/hooks.py (the matrix built on them: test_matrix.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from mlinguality.ablation.hooks import (
    AblationError,
    ablate,
    ablation_hooks,
    mask_from_pairs,
    mean_activation,
)
from mlinguality.activations.stats import ActivationStats
from mlinguality.errors import MlingualityError
from tests.utils import assert_close

SENTENCE = "Blessed are the peacemakers: for they shall be called the children of God."


def _ids(model, text: str = SENTENCE) -> torch.Tensor:
    return model.tokenizer([text], return_tensors="pt")["input_ids"]


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, return_type="logits")


def _hf_with_zeroed_out_columns(model, layer: int, neurons: list[int]):
    """Oracle: a copy of the plain transformers model with W_out rows of ``neurons`` zeroed."""
    hf = copy.deepcopy(model.original_model)
    with torch.no_grad():
        if hasattr(hf, "model"):  # gated: down_proj.weight is [d_model, d_mlp]
            hf.model.layers[layer].mlp.down_proj.weight[:, neurons] = 0.0
        else:  # GPT-2 Conv1D: c_proj.weight is [d_mlp, d_model]
            hf.transformer.h[layer].mlp.c_proj.weight[neurons, :] = 0.0
    return hf


@pytest.fixture(params=["gemma3", "gpt2"])
def arch_model(request, tiny_model, tiny_gpt2):
    return tiny_model if request.param == "gemma3" else tiny_gpt2


@pytest.mark.parametrize("neurons", ["all", [0, 5, 17, 63]])
def test_zero_ablation_equals_zeroed_w_out(arch_model, neurons):
    model = arch_model
    d_mlp = model.cfg.d_mlp
    chosen = list(range(d_mlp)) if neurons == "all" else neurons
    mask = mask_from_pairs([(1, n) for n in chosen], model.cfg.n_layers, d_mlp)
    ids = _ids(model)
    with torch.no_grad():
        expected = _hf_with_zeroed_out_columns(model, 1, chosen)(ids).logits
    with ablate(model, mask, mode="zero"):
        via_context = _logits(model, ids)
    hooks = ablation_hooks(model, mask, mode="zero")
    with torch.no_grad():
        via_run_with_hooks = model.run_with_hooks(ids, fwd_hooks=hooks)
    hooks.verify()
    assert_close(via_context, expected, "fp32_model")
    assert_close(via_run_with_hooks, expected, "fp32_model")
    assert (via_context - _logits(model, ids)).abs().max() > 1e-3, "the ablation must matter"


def test_explicit_values_match_a_torch_hook_on_the_plain_model(tiny_model):
    mask = mask_from_pairs([(0, 2), (0, 9), (1, 30)], 2, tiny_model.cfg.d_mlp)
    values = torch.randn(2, tiny_model.cfg.d_mlp)
    ids = _ids(tiny_model)
    hf = copy.deepcopy(tiny_model.original_model)

    def set_inputs(layer):
        def hook(module, inputs):
            x = inputs[0].clone()
            x[..., mask[layer]] = values[layer, mask[layer]]
            return (x,)

        return hook

    handles = [
        hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(set_inputs(layer))
        for layer in (0, 1)
    ]
    with torch.no_grad():
        expected = hf(ids).logits
    for handle in handles:
        handle.remove()
    with ablate(tiny_model, mask, mode="values", values=values):
        actual = _logits(tiny_model, ids)
    assert_close(actual, expected, "fp32_model")


def test_mean_ablation_with_the_activation_itself_changes_nothing(tiny_model):
    ids = _ids(tiny_model, "A")[:, :1]  # one token: its activation is the mean
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(2)]
    with torch.no_grad():
        baseline, cache = tiny_model.run_with_cache(ids, names_filter=lambda n: n in names)
    recorded = torch.stack([cache[name][0, 0] for name in names])  # [layer, d_mlp]
    mask = torch.ones(2, tiny_model.cfg.d_mlp, dtype=torch.bool)
    with ablate(tiny_model, mask, mode="mean", mean=recorded) as hooks:
        same = _logits(tiny_model, ids)
    assert_close(same, baseline, "fp32")
    assert all(r.n_changed == 0 and r.n_written == 64 for r in hooks.records.values())
    with ablate(tiny_model, mask, mode="mean", mean=recorded + 0.5) as hooks:
        shifted = _logits(tiny_model, ids)
    assert (shifted - baseline).abs().max() > 1e-3
    assert all(r.n_changed == 64 for r in hooks.records.values())


def test_hooks_are_removed_after_the_block_even_on_error(tiny_model):
    mask = mask_from_pairs([(0, 1), (1, 2)], 2, tiny_model.cfg.d_mlp)
    ids = _ids(tiny_model)
    baseline = _logits(tiny_model, ids)
    points = [tiny_model.hook_dict[f"blocks.{layer}.mlp.hook_post"] for layer in (0, 1)]
    # the alias and the bridge's canonical name are one hook point
    assert points[0] is tiny_model.hook_dict["blocks.0.mlp.out.hook_in"]
    with ablate(tiny_model, mask):
        assert all(len(point.fwd_hooks) == 2 for point in points)
        inside = _logits(tiny_model, ids)
    assert all(len(point.fwd_hooks) == 0 for point in points)
    assert (inside - baseline).abs().max() > 1e-4
    with pytest.raises(RuntimeError, match="boom"), ablate(tiny_model, mask):
        raise RuntimeError("boom")
    assert all(len(point.fwd_hooks) == 0 for point in points)
    assert_close(_logits(tiny_model, ids), baseline, "exact")


@pytest.mark.parametrize(
    ("mask_pairs", "kwargs", "match"),
    [
        ([], {}, "empty neuron set"),
        ([(0, 1)], {"hook_template": "blocks.{layer}.mlp.hook_nope"}, "no hook point"),
        ([(0, 1)], {"mode": "mean"}, "needs mean"),
        ([(0, 1)], {"mode": "values"}, "needs values"),
        ([(0, 1)], {"mode": "zero", "values": 1.0}, "neither"),
    ],
)
def test_bad_ablations_raise_the_documented_error(tiny_model, mask_pairs, kwargs, match):
    mask = mask_from_pairs(mask_pairs, 2, tiny_model.cfg.d_mlp)
    with pytest.raises(AblationError, match=match):
        ablation_hooks(tiny_model, mask, **kwargs)
    assert issubclass(AblationError, MlingualityError)


def test_wrong_mask_shape_raises(tiny_model):
    with pytest.raises(AblationError, match="bool"):
        ablation_hooks(tiny_model, torch.ones(3, 64, dtype=torch.bool))
    with pytest.raises(AblationError, match="outside"):
        mask_from_pairs([(2, 0)], 2, 64)


def test_verify_raises_when_a_targeted_layer_never_fires(tiny_model):
    mask = mask_from_pairs([(0, 1), (1, 2)], 2, tiny_model.cfg.d_mlp)
    with pytest.raises(AblationError, match="never fired"), ablate(tiny_model, mask):
        pass  # no forward pass
    hooks = ablation_hooks(tiny_model, mask)
    with torch.no_grad():
        tiny_model.run_with_hooks(_ids(tiny_model), fwd_hooks=hooks, stop_at_layer=1)
    with pytest.raises(AblationError, match=r"never fired on blocks\.1\.mlp\.hook_post"):
        hooks.verify()


def test_verify_raises_when_the_write_does_not_reach_the_model(tiny_model):
    mask = mask_from_pairs([(0, 1)], 2, tiny_model.cfg.d_mlp)
    hooks = ablation_hooks(tiny_model, mask)
    write, check = hooks
    sabotage = (write[0], lambda act, hook: act + 1.0)  # a later hook undoing the write
    with torch.no_grad():
        tiny_model.run_with_hooks(_ids(tiny_model), fwd_hooks=[write, sabotage, check])
    with pytest.raises(AblationError, match="not at their target"):
        hooks.verify()


def test_verify_catches_a_later_hook_that_changes_what_reaches_w_out(tiny_model):
    """The old check read the hook point right after the write, so a hook registered after the
    ablation's (a user's patch, a steering hook) could change W_out's input unnoticed."""
    mask = mask_from_pairs([(0, 1)], 2, tiny_model.cfg.d_mlp)
    later = [("blocks.0.mlp.hook_post", lambda act, hook: act + 1.0)]
    with pytest.raises(AblationError, match="not at their target"):  # noqa: SIM117
        with ablate(tiny_model, mask):
            with tiny_model.hooks(fwd_hooks=later):
                _logits(tiny_model, _ids(tiny_model))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_skip_first_leaves_the_first_position_alone(arch_model, mode):
    d_mlp = arch_model.cfg.d_mlp
    mask = mask_from_pairs([(0, n) for n in range(0, d_mlp, 3)], 2, d_mlp)
    mean = torch.full((2, d_mlp), 0.25) if mode == "mean" else None
    target = 0.25 if mode == "mean" else 0.0
    ids = _ids(arch_model)
    name = "blocks.0.mlp.hook_post"
    with torch.no_grad():
        base_logits, base = arch_model.run_with_cache(ids, names_filter=name)
        with ablate(arch_model, mask, mode, mean=mean, positions="skip_first") as hooks:
            logits, cache = arch_model.run_with_cache(ids, names_filter=name)
    acts, before = cache[name][0], base[name][0]
    neurons = mask[0]
    assert torch.equal(acts[0], before[0]), "position 0 (BOS) is not written"
    assert (acts[1:, neurons] == target).all()
    assert torch.equal(acts[1:, ~neurons], before[1:, ~neurons])
    assert torch.equal(logits[0, 0], base_logits[0, 0]), "causal: position 0 cannot change"
    assert not torch.allclose(logits[0, 1:], base_logits[0, 1:])
    assert hooks.records[0].n_written == (ids.shape[1] - 1) * int(neurons.sum())
    with pytest.raises(AblationError, match="positions"):
        ablation_hooks(arch_model, mask, positions="first")


def test_records_count_every_forward_and_reset(tiny_model):
    mask = mask_from_pairs([(1, 4), (1, 5)], 2, tiny_model.cfg.d_mlp)
    ids = _ids(tiny_model)
    with ablate(tiny_model, mask) as hooks:
        _logits(tiny_model, ids)
        _logits(tiny_model, ids)
    assert list(hooks.records) == [1]
    record = hooks.records[1]
    assert (record.calls, record.n_written) == (2, 2 * ids.shape[1] * 2)
    assert 0 < record.n_changed <= record.n_written
    hooks.reset()
    with pytest.raises(AblationError, match="never fired"):
        hooks.verify()


def _stats(lang: str, n_tokens: int, mean_value: float) -> ActivationStats:
    stats = ActivationStats.empty(lang, 2, 3, gated=True)
    stats.n_tokens = n_tokens
    stats.sum = torch.full((2, 3), mean_value * n_tokens, dtype=torch.float64)
    return stats


def test_mean_activation_language_and_token_weighting():
    stats = {"en": _stats("en", 10, 1.0), "hi": _stats("hi", 30, 3.0)}
    assert_close(mean_activation(stats), torch.full((2, 3), 2.0), "exact")
    assert_close(mean_activation(stats, "token"), torch.full((2, 3), 2.5), "exact")
    with pytest.raises(AblationError):
        mean_activation({})
