"""Tests for mlinguality/steering/generation.py: batched, cached, steered generation against a
manual one-prompt-at-a-time loop over the plain transformers model (no padding, no cache)."""

from __future__ import annotations

import copy

import pytest
import torch

from mlinguality.ablation.hooks import mask_from_pairs
from mlinguality.steering.generation import check_kv_cache, decode_new_tokens, generate
from mlinguality.steering.interventions import Intervention, steering_hooks
from tests.steering.test_interventions import _mlp_out

PROMPTS = [
    "In the beginning God created",
    "Au commencement",
    "Selig sind die Friedfertigen; denn sie",
    "Блаженны",
]
N_NEW = 6


def oracle_generate(model, prompt_ids, n_new, mask=None, target=None, alpha=1.0, positions="all"):
    """Greedy decoding of one unpadded prompt by full forward passes of the plain model, the
    intervention written by a pre-hook on W_out at the columns ``positions`` names."""
    hf = copy.deepcopy(model.original_model)
    n_prompt = len(prompt_ids)

    def edit(layer):
        def hook(module, inputs):
            x = inputs[0].clone()
            cols = {"all": slice(1, None), "prompt": slice(1, n_prompt)}.get(
                positions, slice(n_prompt, None)
            )
            n = mask[layer]
            a = x[:, cols][..., n]
            x[:, cols, n] = a + alpha * (target[layer, n] - a)
            return (x,)

        return hook

    if mask is not None:
        for layer in range(model.cfg.n_layers):
            if mask[layer].any():
                _mlp_out(hf, layer).register_forward_pre_hook(edit(layer))
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(n_new):
            next_id = hf(ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, n_prompt:].tolist()


@pytest.fixture(params=["gemma3", "gpt2"])
def arch_model(request, tiny_model, tiny_gpt2):
    return tiny_model if request.param == "gemma3" else tiny_gpt2


def test_kv_cache_agrees_with_the_full_forward(arch_model):
    assert check_kv_cache(arch_model)


def test_batched_left_padded_cached_generation_equals_one_prompt_loops(arch_model):
    out = generate(arch_model, PROMPTS, max_new_tokens=N_NEW, stop_at_eos=False, batch_size=3)
    for prompt_ids, new_ids in zip(out.prompt_ids, out.new_ids, strict=True):
        assert prompt_ids[0] == arch_model.tokenizer.bos_token_id
        assert new_ids == oracle_generate(arch_model, prompt_ids, N_NEW)
    assert out.texts[0] == arch_model.tokenizer.decode(out.new_ids[0], skip_special_tokens=True)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steered_generation_equals_the_oracle_loop(tiny_model, positions):
    mask = mask_from_pairs([(0, 4), (0, 50), (1, 9), (1, 33)], 2, 64)
    target = torch.full((2, 64), 4.0)
    hooks = steering_hooks(tiny_model, Intervention(mask, target, alpha=1.5), positions)
    out = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW, stop_at_eos=False, hooks=hooks)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=N_NEW, stop_at_eos=False)
    for prompt_ids, new_ids in zip(out.prompt_ids, out.new_ids, strict=True):
        assert new_ids == oracle_generate(
            tiny_model, prompt_ids, N_NEW, mask, target, 1.5, positions
        )
    assert out.new_ids != plain.new_ids, "the intervention must change some generation"
    assert hooks.records[1].calls == N_NEW  # one batch: the prompt pass + N_NEW - 1 cached steps


@pytest.mark.parametrize("do_sample", [False, True])
def test_steered_generation_with_and_without_kv_cache_is_identical(tiny_model, do_sample):
    mask = mask_from_pairs([(0, 7), (1, 21)], 2, 64)
    intervention = Intervention(mask, torch.full((2, 64), -3.0), alpha=1.0)
    runs = [
        generate(
            tiny_model,
            PROMPTS,
            max_new_tokens=N_NEW,
            hooks=steering_hooks(tiny_model, intervention, "generated"),
            use_cache=cached,
            do_sample=do_sample,
            temperature=2.0,
            seed=3,
        )
        for cached in (True, False)
    ]
    assert runs[0].new_ids == runs[1].new_ids


def test_seeded_sampling_is_reproducible_and_the_seed_matters(tiny_model):
    def sample(seed):
        return generate(
            tiny_model, PROMPTS, max_new_tokens=N_NEW, do_sample=True, temperature=3.0, seed=seed
        ).new_ids

    torch.manual_seed(123)
    first = sample(1)
    state = torch.random.get_rng_state()
    assert sample(1) == first
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG is left alone"
    assert sample(2) != first


def test_a_generation_of_special_tokens_alone_has_no_language(tiny_model):
    """Before: Gemma's ``<start_of_image>`` x 12 (an added token flagged special, which
    ``decode(skip_special_tokens=True)`` keeps) decoded as text and was identified as English."""
    import types

    from tokenizers import AddedToken

    from mlinguality.steering.experiment import score_generations
    from mlinguality.steering.language_id import LanguageIdentifier, outcome

    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    # as the converted Gemma tokenizer has them: added, not flagged special
    tokenizer.add_tokens([AddedToken("<start_of_image>", special=False)])
    tokenizer.add_tokens([AddedToken("<unused0>", special=True), AddedToken("[multimodal]")])
    image = tokenizer.convert_tokens_to_ids("<start_of_image>")
    unused = tokenizer.convert_tokens_to_ids("<unused0>")
    assert image not in tokenizer.all_special_ids
    before = tokenizer.decode([image] * 12, skip_special_tokens=True)
    assert before == "<start_of_image>" * 12 and LanguageIdentifier().classify(before)[0] == "en"
    multimodal = tokenizer.convert_tokens_to_ids("[multimodal]")
    assert decode_new_tokens(tokenizer, [unused, image, multimodal, tokenizer.eos_token_id]) == ""
    word = tokenizer("Blessed", add_special_tokens=False)["input_ids"]

    def fake_generate(ids, max_new_tokens, **kwargs):
        tail = [image] * max_new_tokens if ids.shape[0] == 1 else word + [image] * 3
        return torch.cat([ids, torch.tensor([tail] * ids.shape[0])], dim=1)

    model = types.SimpleNamespace(
        tokenizer=tokenizer, cfg=types.SimpleNamespace(device="cpu"), generate=fake_generate
    )
    out = generate(model, ["Au commencement"], max_new_tokens=12, use_cache=False)
    assert out.new_ids == [[image] * 12] and out.texts == [""]
    (row,) = score_generations(tiny_model, out, LanguageIdentifier())
    assert row["lang"] == "" and outcome(row["lang"], "fr", "en") == "other"
    mixed = generate(model, ["Au commencement", "Blessed are"], max_new_tokens=4, use_cache=False)
    assert mixed.texts == [tokenizer.decode(word)] * 2
