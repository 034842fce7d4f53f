"""Tests for mlinguality/ablation/evaluation.py: padding-correct loss, bits per byte, batching."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mlinguality import TinyModelConfig, load_model
from mlinguality.ablation.evaluation import encode_texts, evaluate, token_nll
from mlinguality.errors import MlingualityError
from mlinguality.model import build_tiny_hf_model, build_tiny_tokenizer
from tests.utils import assert_close

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "Jesus wept.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "Блаженны миротворцы.",
    "धन्य हैं वे, जो मेल करवानेवाले हैं",
    "使人和平的人有福了",
    "Selig sind die Friedfertigen; denn sie werden Gottes Kinder heißen, so steht es geschrieben.",
]


@pytest.fixture(scope="module", params=["gemma3", "gpt2"])
def model_and_oracle(request):
    """A bridge and, independently built from the same seed, the plain transformers model."""
    config = TinyModelConfig(architecture=request.param, n_layers=2, d_mlp=48, seed=5)
    bridge = load_model(config)
    oracle = build_tiny_hf_model(config, len(build_tiny_tokenizer(config)))
    return bridge, oracle


def _oracle_text_nll(oracle, tokenizer, text: str) -> float:
    """Unpadded, batch-1 NLL of every text token given BOS + the tokens before it."""
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    ids = torch.tensor([ids])
    with torch.no_grad():
        logits = oracle(ids).logits[0]
    log_probs = torch.log_softmax(logits[:-1].double(), dim=-1)
    return float(-log_probs.gather(1, ids[0, 1:, None]).sum())


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_tokens", [40, 4096])
def test_padded_batched_loss_equals_unpadded_per_sentence(
    model_and_oracle, padding_side, batch_tokens
):
    bridge, oracle = model_and_oracle
    encoded = encode_texts(
        bridge.tokenizer, TEXTS, "mix", batch_tokens=batch_tokens, padding_side=padding_side
    )
    has_padding = any((batch.attention_mask == 0).any() for batch in encoded.batches)
    assert has_padding, "the test must exercise padding"
    loss = evaluate(bridge, encoded)
    expected = torch.tensor([_oracle_text_nll(oracle, bridge.tokenizer, t) for t in TEXTS])
    assert_close(loss.text_nll, expected, "fp32_model")
    assert loss.n_tokens == sum(
        len(bridge.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS
    )


def test_pad_ids_do_not_change_the_loss(tiny_model):
    encoded = encode_texts(tiny_model.tokenizer, TEXTS, "mix", batch_tokens=4096)
    reference = evaluate(tiny_model, encoded).text_nll
    for batch in encoded.batches:  # overwrite pads with arbitrary real token ids
        pads = batch.attention_mask == 0
        batch.input_ids[pads] = torch.randint(5, 300, (int(pads.sum()),))
    assert_close(evaluate(tiny_model, encoded).text_nll, reference, "fp32")


def test_bits_per_byte_perplexity_and_byte_counts(tiny_model):
    texts = ["धन्य", "ab"]  # Devanagari: 4 code points, 12 UTF-8 bytes
    encoded = encode_texts(tiny_model.tokenizer, texts, "hi")
    assert encoded.n_bytes.tolist() == [12, 2]
    loss = evaluate(tiny_model, encoded)
    assert loss.total_bytes == 14
    assert math.isclose(loss.bits_per_byte, loss.nll / math.log(2) / 14)
    assert math.isclose(loss.mean_nll, loss.nll / loss.n_tokens)
    assert math.isclose(loss.perplexity, math.exp(loss.nll / loss.n_tokens))


def test_token_nll_is_zero_at_pads_and_log_vocab_for_uniform_logits():
    vocab = 11
    ids = torch.tensor([[2, 5, 6, 0], [0, 2, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    logits = torch.zeros(2, 4, vocab)
    logits[0, 0, 5] = 3.0  # make one prediction better than uniform
    nll = token_nll(logits, ids, mask)
    uniform = math.log(vocab)
    expected_first = -math.log(math.exp(3.0) / (math.exp(3.0) + vocab - 1))
    expected = torch.tensor([[expected_first, uniform, 0.0], [0.0, uniform, uniform]])
    assert_close(nll, expected, "fp32")


def test_batches_sorted_within_budget_and_cover_every_text_once(tiny_model):
    texts = [("word " * n).strip() for n in (9, 1, 5, 3, 7, 2, 8)]
    encoded = encode_texts(tiny_model.tokenizer, texts, "en", batch_tokens=30, max_batch_size=3)
    seen = sorted(i for batch in encoded.batches for i in batch.indices)
    assert seen == list(range(len(texts)))
    widths = [batch.input_ids.shape[1] for batch in encoded.batches]
    assert widths == sorted(widths, reverse=True)
    for batch in encoded.batches:
        assert batch.input_ids.shape[0] <= 3
        assert batch.input_ids.numel() <= 30 or batch.input_ids.shape[0] == 1
    assert encoded.total_predicted == sum(
        len(tiny_model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
    )


@pytest.mark.parametrize(
    ("texts", "options", "match"),
    [
        ([], {}, "no texts"),
        (["ok", ""], {}, "text 1 is empty"),
        (["ok"], {"padding_side": "middle"}, "padding_side"),
    ],
)
def test_bad_input_raises(tiny_model, texts, options, match):
    with pytest.raises(MlingualityError, match=match):
        encode_texts(tiny_model.tokenizer, texts, "xx", **options)


def test_tokenizer_without_bos_and_with_eos_gets_the_same_ids(tiny_model):
    from tokenizers import processors

    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", tokenizer.eos_token_id)]
    )
    assert tokenizer("ab")["input_ids"][0] != tokenizer.bos_token_id, "no BOS any more"
    reference = encode_texts(tiny_model.tokenizer, TEXTS, "mix")
    adapted = encode_texts(tokenizer, TEXTS, "mix")
    assert [t.ids for t in adapted.texts] == [t.ids for t in reference.texts]
    assert adapted.texts[0].ids[0] == tokenizer.bos_token_id


def _xglm_style(tokenizer):
    """A copy of ``tokenizer`` whose post-processor puts ``<eos>`` in front (XGLM: ``</s> $A``)."""
    from tokenizers import processors

    xglm = copy.deepcopy(tokenizer)
    xglm.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> $A", special_tokens=[("<eos>", tokenizer.eos_token_id)]
    )
    return xglm


def test_leading_special_token_is_context_and_never_scored(model_and_oracle):
    bridge, oracle = model_and_oracle
    tokenizer = _xglm_style(bridge.tokenizer)
    eos = tokenizer.eos_token_id
    encoded = encode_texts(tokenizer, TEXTS, "mix", batch_tokens=64)
    for text, tokens in zip(TEXTS, encoded.texts, strict=True):
        body = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokens.ids == [eos, *body], "the leading </s> is kept, no BOS is added"
    assert encoded.n_predicted.tolist() == [
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS
    ]
    # oracle: batch 1, unpadded, NLL of every text token given </s> and the tokens before it
    expected = []
    for text in TEXTS:
        ids = torch.tensor([[eos, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            log_probs = torch.log_softmax(oracle(ids).logits[0, :-1].double(), dim=-1)
        expected.append(float(-log_probs.gather(1, ids[0, 1:, None]).sum()))
    loss = evaluate(bridge, encoded)
    assert_close(loss.text_nll, torch.tensor(expected, dtype=torch.float64), "fp32_model")


def _capped(cap: float | None):
    """A tiny Gemma 3 bridge and its oracle, both with Gemma 2's final logit soft cap."""
    config = TinyModelConfig(architecture="gemma3", n_layers=2, d_mlp=48, seed=7)
    bridge = load_model(config)
    oracle = build_tiny_hf_model(config, len(build_tiny_tokenizer(config)))
    for model in (bridge.original_model, oracle):
        model.config.final_logit_softcapping = cap
    return bridge, oracle


def test_scored_positions_streamed_through_the_head_equal_the_oracle(model_and_oracle, monkeypatch):
    """Vocabulary blocks that do not divide the vocabulary, and flushes of a few positions at a
    time across batches, give the unpadded batch-1 NLL of the plain transformers model."""
    from mlinguality.ablation import evaluation

    bridge, oracle = model_and_oracle
    monkeypatch.setattr(evaluation, "_VOCAB_CHUNK", 37)
    monkeypatch.setattr(evaluation, "_UNEMBED_ROWS", 5)
    assert evaluation._packed_unembedding_ok(
        bridge, encode_texts(bridge.tokenizer, TEXTS).batches[0]
    )
    loss = evaluate(bridge, encode_texts(bridge.tokenizer, TEXTS, "mix", batch_tokens=40))
    expected = torch.tensor([_oracle_text_nll(oracle, bridge.tokenizer, t) for t in TEXTS])
    assert_close(loss.text_nll, expected, "fp32_model")


def test_soft_capped_logits_keep_the_packed_path_and_the_oracle_loss():
    from mlinguality.ablation import evaluation

    bridge, oracle = _capped(0.01)
    encoded = encode_texts(bridge.tokenizer, TEXTS, "mix", batch_tokens=40)
    assert evaluation._packed_unembedding_ok(bridge, encoded.batches[0])
    expected = torch.tensor([_oracle_text_nll(oracle, bridge.tokenizer, t) for t in TEXTS])
    uncapped = torch.tensor(
        [_oracle_text_nll(_capped(None)[1], bridge.tokenizer, t) for t in TEXTS]
    )
    assert (expected - uncapped).abs().max() > 1.0, "the cap must change the loss"
    assert_close(evaluate(bridge, encoded).text_nll, expected, "fp32_model")


def test_a_head_that_is_not_the_logits_falls_back_to_full_forwards(monkeypatch, caplog):
    """If the linear head alone does not give the logits (here: the cap is ignored), the first
    call notices on its probe, warns, and every result comes from full forwards."""
    from mlinguality.ablation import evaluation

    bridge, oracle = _capped(0.01)
    monkeypatch.setattr(evaluation, "_softcap", lambda model, logits: logits)
    encoded = encode_texts(bridge.tokenizer, TEXTS, "mix", batch_tokens=40)
    with caplog.at_level("WARNING", logger="mlinguality.ablation.evaluation"):
        loss = evaluate(bridge, encoded)
    assert "using full forwards" in caplog.text
    expected = torch.tensor([_oracle_text_nll(oracle, bridge.tokenizer, t) for t in TEXTS])
    assert_close(loss.text_nll, expected, "fp32_model")


def test_a_hook_on_the_logits_sees_every_position(tiny_model):
    encoded = encode_texts(tiny_model.tokenizer, TEXTS, "mix", batch_tokens=40)
    seen: list[tuple[int, ...]] = []
    with tiny_model.hooks(fwd_hooks=[("unembed.hook_out", lambda x, hook: seen.append(x.shape))]):
        hooked = evaluate(tiny_model, encoded)
    assert [shape[:2] for shape in seen] == [tuple(b.input_ids.shape) for b in encoded.batches]
    assert_close(hooked.text_nll, evaluate(tiny_model, encoded).text_nll, "fp32")
