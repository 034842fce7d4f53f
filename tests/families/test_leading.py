"""What goes in front of a text (mlinguality/families.py ``choose_leading``, batching's
``n_prefix``): the tokenizer's own, a BOS only where the model needs one, never a real token."""

from __future__ import annotations

import pytest

from mlinguality.activations.batching import tokenize_texts
from mlinguality.families import added_special_ids, choose_leading
from mlinguality.gemma import gemma_cache_dir
from tests.families.builders import FAMILIES, gpt2_tokenizer

_BY_NAME = {family.name: family for family in FAMILIES}


def test_a_text_starting_with_a_special_token_keeps_it_as_text():
    """Qwen adds nothing in front: a text that begins with ``<|im_start|>`` (a chat transcript)
    keeps that token as text, where counting leading special ids would have dropped it."""
    tokenizer = _BY_NAME["qwen2"].tokenizer()
    (text,) = tokenize_texts(tokenizer, ["<|im_start|>user hello"])
    assert text.ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert text.n_prefix == 0


def test_a_bos_that_is_also_the_unknown_token_is_still_excluded():
    """OPT's BOS ``</s>`` is also its unknown token: it is what the tokenizer puts in front."""
    tokenizer = _BY_NAME["opt"].tokenizer()
    (text,) = tokenize_texts(tokenizer, ["Heureux ceux"])
    assert tokenizer.convert_ids_to_tokens(text.ids[:1]) == ["</s>"] and text.n_prefix == 1


def test_an_eos_the_tokenizer_appends_is_not_text():
    from transformers import LlamaTokenizer

    base = _BY_NAME["llama2"].tokenizer()
    tokenizer = LlamaTokenizer(
        vocab=base.get_vocab(), merges=base._merges, add_bos_token=True, add_eos_token=True
    )
    assert added_special_ids(tokenizer) == ((tokenizer.bos_token_id,), (tokenizer.eos_token_id,))
    (text,) = tokenize_texts(tokenizer, ["Heureux ceux"])
    assert text.ids[-1] != tokenizer.eos_token_id
    assert text.ids[1:] == tokenizer("Heureux ceux", add_special_tokens=False)["input_ids"]


def test_a_declared_bos_is_added_only_when_it_is_the_models():
    from transformers import GPT2Config

    added = gpt2_tokenizer()
    leading = choose_leading(added, GPT2Config(bos_token_id=added.bos_token_id))
    assert leading.source == "added" and leading.front == (added.bos_token_id,)
    other = gpt2_tokenizer()
    leading = choose_leading(other, GPT2Config(bos_token_id=other.bos_token_id + 1))
    assert leading.source == "none" and "not the model's" in leading.reason
    assert other("a")["input_ids"] == other("a", add_special_tokens=False)["input_ids"]


def test_a_chat_turn_bos_is_not_added():
    tokenizer = _BY_NAME["smollm2"].tokenizer()
    leading = choose_leading(tokenizer)
    assert leading.front == () and "chat-turn" in leading.reason


@pytest.mark.skipif(
    not (gemma_cache_dir() / "tokenizer.json").exists(), reason="the converted Gemma is not here"
)
def test_gemmas_own_tokenizer_leads_with_its_bos():
    """The real 262k-entry Gemma tokenizer (from the converted cache): its own ``<bos>``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_cache_dir())
    leading = choose_leading(tokenizer)
    assert leading.source == "tokenizer" and leading.front == (tokenizer.bos_token_id,)
