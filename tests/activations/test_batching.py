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


def _naive_position_mask(batch, texts, positions, include_bos):
    """The oracle: one element at a time, from the definition."""
    mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
    width = batch.input_ids.shape[1]
    for row, index in enumerate(batch.indices):
        text, length = texts[index], batch.lengths[row]
        shift = width - length if batch.padding_side == "left" else 0
        first = 0 if include_bos else text.n_prefix
        chosen = {
            "all": range(first, length),
            "last": [length - 1] if length > first else [],
            "word_final": [token for token in text.word_final if token >= first],
        }[positions]
        for token in chosen:
            mask[row, shift + token] = True
    return mask


def test_position_masks_and_padding_match_a_per_token_loop():
    import random

    from mlinguality.activations.batching import TokenizedText

    rng = random.Random(0)
    texts = []
    for _ in range(40):
        n = rng.randint(1, 30)
        prefix = rng.choice([0, 1, 2])
        words = sorted(rng.sample(range(n), rng.randint(0, n)))
        ids = [rng.randint(3, 999) for _ in range(n)]
        texts.append(TokenizedText(ids, prefix > 0, words, n_prefix=min(prefix, n)))
    for side in ("left", "right"):
        for rows in ([0], list(range(40)), [5, 3, 17, 30], [7, 7]):
            batch = pad_batch(texts, rows, 0, side)
            for row, index in enumerate(rows):  # padding: the ids, mask and positions by hand
                length, width = len(texts[index].ids), batch.input_ids.shape[1]
                start = width - length if side == "left" else 0
                assert batch.input_ids[row, start : start + length].tolist() == texts[index].ids
                assert batch.attention_mask[row].tolist() == [
                    int(start <= column < start + length) for column in range(width)
                ]
                assert batch.position_ids[row, start : start + length].tolist() == list(
                    range(length)
                )
            for positions in ("all", "last", "word_final"):
                for include_bos in (False, True):
                    got = position_mask(batch, texts, positions, include_bos)
                    want = _naive_position_mask(batch, texts, positions, include_bos)
                    assert torch.equal(got, want), (side, rows, positions, include_bos)
