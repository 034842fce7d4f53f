"""Tests for mlinguality/activations/batching.py: batch plans, padding, position masks."""

from __future__ import annotations

import torch

from mlinguality.activations.batching import pad_batch, plan_batches, position_mask, tokenize_texts


def test_plan_respects_the_token_budget_and_covers_every_example_once():
    lengths = [5, 17, 3, 3, 40, 9, 9, 12, 1]
    batches = plan_batches(lengths, batch_tokens=36, max_batch_size=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 36
        assert len(batch) <= 3


def test_left_and_right_padding_place_the_same_tokens(tiny_model):
    texts = tokenize_texts(tiny_model.tokenizer, ["a b c d e f", "xyz"], word_final=True)
    pad = tiny_model.tokenizer.pad_token_id
    for side in ("left", "right"):
        batch = pad_batch(texts, [0, 1], pad, side)
        mask = position_mask(batch, texts, "all")
        for row in range(2):
            real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
            assert real == texts[row].ids
            # counted = every real token but BOS
            assert mask[row].sum() == len(texts[row].ids) - 1
            assert batch.position_ids[row][batch.attention_mask[row].bool()].tolist() == list(
                range(len(texts[row].ids))
            )
        last = position_mask(batch, texts, "last")
        assert last.sum() == 2
        assert batch.input_ids[last].tolist() == [texts[0].ids[-1], texts[1].ids[-1]]


def test_word_final_marks_one_token_per_word(tiny_model):
    text = "Blessed are the peacemakers: for they"
    (tokenized,) = tokenize_texts(tiny_model.tokenizer, [text], word_final=True)
    assert len(tokenized.word_final) == 6
    tokens = [
        tiny_model.tokenizer.decode(tokenized.ids[: i + 1], skip_special_tokens=True)
        for i in tokenized.word_final
    ]
    assert tokens == [
        "Blessed",
        "Blessed are",
        "Blessed are the",
        "Blessed are the peacemakers:",
        "Blessed are the peacemakers: for",
        text,
    ]
    assert tokenized.n_bytes == len(text.encode())
    assert not torch.is_tensor(tokenized.ids)


def test_leading_special_tokens_are_not_counted(tiny_model):
    """XGLM's post-processor puts ``</s>`` (not BOS) in front: a constant, never a statistic."""
    import copy

    from tokenizers import processors

    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> <bos> $A", special_tokens=[("<eos>", eos), ("<bos>", bos)]
    )
    texts = tokenize_texts(tokenizer, ["a b c", "xyz w"])
    assert [t.ids[:2] for t in texts] == [[eos, bos], [eos, bos]]
    assert [t.n_prefix for t in texts] == [2, 2]
    for side in ("left", "right"):
        batch = pad_batch(texts, [0, 1], tokenizer.pad_token_id, side)
        mask = position_mask(batch, texts, "all")
        assert mask.sum(1).tolist() == [len(t.ids) - 2 for t in texts]
        assert not torch.isin(batch.input_ids[mask], torch.tensor([eos, bos])).any()
        kept = position_mask(batch, texts, "all", include_bos=True)
        assert kept.sum(1).tolist() == [len(t.ids) for t in texts]
