"""Slow acceptance: ablation and padding-correct loss on the real Gemma 3 270M (short inputs)."""

from __future__ import annotations

import math

import pytest
import torch

from mlinguality.ablation.evaluation import encode_languages, encode_texts, evaluate
from mlinguality.ablation.hooks import ablate, mask_from_pairs
from mlinguality.ablation.matrix import ablation_matrix
from tests.utils import assert_close

pytestmark = pytest.mark.slow

TEXTS = {
    "en": ["Jesus wept.", "Blessed are the meek: for they shall inherit the earth."],
    "ru": ["Иисус прослезился.", "Блаженны кроткие, ибо они наследуют землю."],
    "hi": ["यीशु रोया।"],
}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_gemma_batched_padded_loss_equals_one_sentence_at_a_time(gemma, padding_side):
    texts = TEXTS["en"] + TEXTS["ru"]
    batched = encode_texts(gemma.tokenizer, texts, "mix", padding_side=padding_side)
    assert len(batched.batches) == 1 and (batched.batches[0].attention_mask == 0).any()
    single = encode_texts(gemma.tokenizer, texts, "mix", batch_tokens=1)  # no padding at all
    assert all(batch.input_ids.shape[0] == 1 for batch in single.batches)
    assert_close(evaluate(gemma, batched).text_nll, evaluate(gemma, single).text_nll, "fp32_model")


def test_gemma_zero_ablating_a_layer_equals_zeroed_w_out(gemma):
    """Oracle: edit the underlying HF weights in place (restored after), no hooks."""
    encoded = encode_texts(gemma.tokenizer, TEXTS["en"], "en")
    layer = 3
    mask = torch.zeros(gemma.cfg.n_layers, gemma.cfg.d_mlp, dtype=torch.bool)
    mask[layer] = True
    with ablate(gemma, mask, mode="zero") as hooks:
        ablated = evaluate(gemma, encoded)
    assert hooks.records[layer].calls == len(encoded.batches)
    down_proj = gemma.original_model.model.layers[layer].mlp.down_proj.weight
    saved = down_proj.detach().clone()
    try:
        with torch.no_grad():
            down_proj.zero_()
        oracle = evaluate(gemma, encoded)
    finally:
        with torch.no_grad():
            down_proj.copy_(saved)
    baseline = evaluate(gemma, encoded)
    assert_close(ablated.text_nll, oracle.text_nll, "fp32_model")
    assert abs(ablated.nll - baseline.nll) > 1e-3 * baseline.nll, "ablating a layer must matter"


def test_gemma_small_matrix_runs_and_checks_every_layer(gemma):
    encoded = encode_languages(gemma.tokenizer, TEXTS)
    pairs = [(layer, (97 * layer) % 2048) for layer in range(gemma.cfg.n_layers)]
    sets = {
        "en": mask_from_pairs(pairs, gemma.cfg.n_layers, gemma.cfg.d_mlp),
        "ru": mask_from_pairs([(0, 5), (17, 9)], gemma.cfg.n_layers, gemma.cfg.d_mlp),
    }
    matrix = ablation_matrix(gemma, encoded, sets, "zero", n_seeds=1)
    base = matrix.baseline_bits_per_byte()
    assert all(0.2 < float(b) < 8.0 for b in base), f"implausible bits per byte {base.tolist()}"
    delta = matrix.delta()
    assert delta.shape == (3, 3) and not torch.isnan(delta[:2]).any()
    assert math.isnan(float(delta[2, 2]))  # hi has no set, so no random control
