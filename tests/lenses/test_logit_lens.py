"""The logit lens against the model's own final norm and head (HF modules, not the bridge's),
the real logits at the last layer, torch's cross_entropy and shares counted in a loop."""

from __future__ import annotations

import math

import pytest
import torch

from mlinguality.ablation import evaluation
from mlinguality.dashboards.token_language import TokenLanguages
from mlinguality.lenses.logit_lens import lens_decode, lens_logits, logit_lens
from tests.utils import assert_close

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "Blessed are the peacemakers.",
]


def _hf_norm_and_head(model):
    """The Hugging Face model's own final norm and output embedding (not the bridge's)."""
    hf = model.original_model
    norm = hf.model.norm if hasattr(hf, "model") else hf.transformer.ln_f
    return norm, hf.get_output_embeddings()


def _collected(model):
    """Per position (all but each text's last): resid_post of every layer, the next token, the
    oracle lens logits per layer and the model's real logits."""
    norm, head = _hf_norm_and_head(model)
    resid, nxt, oracle, real = [], [], [], []
    with torch.no_grad():
        for text in TEXTS:
            ids = model.tokenizer([text], return_tensors="pt")["input_ids"]
            logits, cache = model.run_with_cache(ids)
            layers = [
                cache[f"blocks.{L}.hook_resid_post"][0, :-1] for L in range(model.cfg.n_layers)
            ]
            resid.append(torch.stack(layers, 1))
            oracle.append(torch.stack([head(norm(r)) for r in layers], 1))
            nxt.append(ids[0, 1:])
            real.append(logits[0, :-1])
    return torch.cat(resid), torch.cat(nxt), torch.cat(oracle), torch.cat(real)


@pytest.fixture(params=["gemma3", "gpt2"])
def arch_model(request, tiny_model, tiny_gpt2):
    return tiny_model if request.param == "gemma3" else tiny_gpt2


def test_lens_is_final_norm_and_head_and_the_last_layer_is_the_logits(arch_model):
    resid, _, oracle, real = _collected(arch_model)
    for layer in range(resid.shape[1]):
        assert_close(lens_logits(arch_model, resid[:, layer]), oracle[:, layer], "fp32")
    assert_close(lens_logits(arch_model, resid[:, -1]), real, "fp32")
    # the oracle itself is no identity: layers decode differently
    assert (oracle[:, 0] - oracle[:, -1]).abs().max() > 1e-2


def _table(d_vocab: int) -> dict[int, str]:
    """Token ids by residue: 0 -> en, 1 -> fr, 2 -> de, 3 -> unassigned."""
    names = {0: "en", 1: "fr", 2: "de"}
    return {t: names[t % 4] for t in range(d_vocab) if t % 4 in names}


def test_loss_and_shares_against_cross_entropy_and_a_loop(arch_model, monkeypatch):
    resid, nxt, oracle, _ = _collected(arch_model)
    monkeypatch.setattr(evaluation, "_VOCAB_CHUNK", 7)  # the running logsumexp/argmax across blocks
    table = _table(arch_model.cfg.d_vocab)
    result = logit_lens(arch_model, resid, nxt, table, "fr", block_size=5)
    assert list(result["layer"]) == list(range(resid.shape[1]))
    assert (result["lang"] == "fr").all() and (result["n"] == len(nxt)).all()
    for layer, row in result.iterrows():
        nll = torch.nn.functional.cross_entropy(oracle[:, layer].double(), nxt, reduction="none")
        assert math.isclose(row["loss"], float(nll.mean()), rel_tol=1e-5)
        assert math.isclose(row["loss_se"], float(nll.std()) / math.sqrt(len(nll)), rel_tol=1e-4)
        top = oracle[:, layer].argmax(-1).tolist()
        langs = [table.get(t) for t in top]
        n = len(top)
        assert row["share_en"] == sum(lang == "en" for lang in langs) / n
        assert row["share_input"] == sum(lang == "fr" for lang in langs) / n
        assert row["share_other"] == sum(lang == "de" for lang in langs) / n
        assert row["share_unassigned"] == sum(lang is None for lang in langs) / n
    assert (result["share_other"] > 0).any() and (result["share_unassigned"] > 0).any()


def test_blocks_and_vocabulary_chunks_change_nothing(tiny_model, monkeypatch):
    resid, nxt, _, _ = _collected(tiny_model)
    whole = lens_decode(tiny_model, resid, nxt, block_size=10_000)
    monkeypatch.setattr(evaluation, "_VOCAB_CHUNK", 3)
    chunked = lens_decode(tiny_model, resid, nxt, block_size=1)
    assert_close(chunked.nll, whole.nll, "fp32")
    assert torch.equal(chunked.top1, whole.top1)


def test_a_token_languages_table_reads_like_the_mapping(tiny_model):
    resid, nxt, _, _ = _collected(tiny_model)
    d_vocab = tiny_model.cfg.d_vocab
    mapping = _table(d_vocab)
    counts = torch.zeros(3, d_vocab, dtype=torch.long)
    for token_id, lang in mapping.items():
        counts[["en", "fr", "de"].index(lang), token_id] = 5
    counts[0, 3::4] = counts[1, 3::4] = 2  # shared: below the margin, unassigned
    table = TokenLanguages(["en", "fr", "de"], counts)
    by_table = logit_lens(tiny_model, resid, nxt, table, "de")
    by_mapping = logit_lens(tiny_model, resid, nxt, mapping, "de")
    assert by_table.equals(by_mapping)
    english_input = logit_lens(tiny_model, resid, nxt, mapping, "en")
    assert (english_input["share_en"] == english_input["share_input"]).all()
