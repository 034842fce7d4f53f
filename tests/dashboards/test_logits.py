"""The direct logit effect against hand-written matrix products on each norm convention."""

from __future__ import annotations

import torch

from mlinguality.dashboards.logits import (
    centred,
    centred_logit_effect,
    direct_logit_effect,
    final_norm_map,
    output_directions,
)
from mlinguality.model import TinyModelConfig, load_model
from tests.utils import assert_close


def _randomise(module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn_like(parameter))


def test_gemma_rms_norm_scale_is_one_plus_weight():
    model = load_model(TinyModelConfig(architecture="gemma3", n_layers=2, d_mlp=64, seed=3))
    norm = model.ln_final.original_component
    _randomise(norm)
    down = model.blocks[1].mlp.out.original_component.weight  # [d_model, d_mlp]
    unembed = model.unembed.original_component.weight  # [vocab, d_model]
    expected = torch.stack([((1 + norm.weight) * down[:, n]) @ unembed.T for n in (5, 60)])
    got = direct_logit_effect(model, [(1, 5), (1, 60)])
    assert_close(got, expected.detach(), "fp32")
    scale, centres = final_norm_map(model)
    assert not centres
    assert_close(scale, (1 + norm.weight).detach(), "fp32")


def test_gpt2_layer_norm_centres_and_scales():
    model = load_model(TinyModelConfig(architecture="gpt2", n_layers=2, d_mlp=64, seed=4))
    norm = model.ln_final.original_component
    _randomise(norm)  # a bias too: it must not leak into the effect
    conv = model.blocks[0].mlp.out.original_component.weight  # Conv1D: [d_mlp, d_model]
    unembed = model.unembed.original_component.weight
    row = conv[7] - conv[7].mean()
    expected = (norm.weight * row) @ unembed.T
    assert_close(direct_logit_effect(model, [(0, 7)])[0], expected.detach(), "fp32")
    assert final_norm_map(model)[1]


def test_output_directions_are_the_w_out_rows():
    model = load_model(TinyModelConfig(architecture="gemma3", n_layers=2, d_mlp=64))
    down = model.blocks[0].mlp.out.original_component.weight
    assert_close(output_directions(model, [(0, 11)])[0], down[:, 11].detach(), "exact")


def test_centred_effects_sum_to_zero():
    effect = torch.randn(3, 50)
    assert_close(centred(effect).sum(dim=1), torch.zeros(3), "fp32")


def test_centred_effect_on_chosen_tokens_is_the_full_vocabulary_one():
    model = load_model(TinyModelConfig(architecture="gemma3", n_layers=2, d_mlp=64, seed=5))
    _randomise(model.ln_final.original_component)
    tokens = torch.tensor([3, 17, 99, 250])
    full = centred(direct_logit_effect(model, [(0, 2), (1, 40)]))
    assert_close(centred_logit_effect(model, [(0, 2), (1, 40)], tokens), full[:, tokens], "fp32")
