"""Tiny random models of every family the matrix covers, saved as local model folders.

Each family is built from its own ``transformers`` config class (non-default MLP ratio where the
architecture has one, 4 layers, d_model 32) with the tokenizer *class* that ships with it, trained
on a few multilingual lines (a ~400-entry vocabulary: Gemma's 262k entries would make every
logit pass 1,000x larger), so that each folder behaves as a real checkpoint of that family does
in what the toolkit relies on: the MLP (gated or not), its width, and what the tokenizer puts in
front of a text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mlinguality.model import _TINY_TRAINING_TEXT

D_MODEL = 32
N_LAYERS = 4
N_HEADS = 4
VOCAB = 400
TRAINING_TEXT = [
    *_TINY_TRAINING_TEXT,
    "В начале сотворил Бог небо и землю.",
    "Dieu dit: Que la lumière soit! Et la lumière fut.",
    "And God said, Let there be light: and there was light.",
]


@dataclass(frozen=True)
class Family:
    """One row of the family matrix.

    Attributes:
        name: The family's name in the matrix (and its folder's name).
        architecture: The ``architectures`` entry of its config.json.
        d_mlp: The checkpoint's MLP width (``ffn_dim``, ``intermediate_size``, ...).
        gated: Whether the MLP is gated (act(gate) * up).
        leading: What the toolkit puts in front of a text: the token's string, or None.
        leading_source: ``"tokenizer"`` (the tokenizer adds it), ``"added"`` (the toolkit adds
            the tokenizer's BOS, which the tokenizer itself does not), or ``"none"``.
        tokenizer: Builds the family's tokenizer.
        config: Builds the family's ``transformers`` config for a vocabulary of ``n`` tokens and
            the tokenizer's special ids.
    """

    name: str
    architecture: str
    d_mlp: int
    gated: bool
    leading: str | None
    leading_source: str
    tokenizer: Callable[[], object]
    config: Callable[[object], object]


def _train(special: list[str], kind: str = "bytelevel"):
    """A trained ``tokenizers`` model's vocab (and merges) over TRAINING_TEXT."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if kind == "unigram":
        backend = Tokenizer(models.Unigram())
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=VOCAB, special_tokens=special, unk_token=special[3], show_progress=False
        )
        backend.train_from_iterator(TRAINING_TEXT, trainer)
        return [tuple(entry) for entry in json.loads(backend.to_str())["model"]["vocab"]], None
    backend = Tokenizer(models.BPE())
    if kind == "metaspace":
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        alphabet: list[str] = []
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def gpt2_tokenizer(**special):
    """GPT-2's (and mGPT's, Phi-2's, OPT's, SmolLM2's) byte-level BPE tokenizer class."""
    from transformers import GPT2Tokenizer

    names = list(
        dict.fromkeys(["<|endoftext|>", *(v for v in special.values() if isinstance(v, str))])
    )
    vocab, merges = _train(names)
    return GPT2Tokenizer(vocab=vocab, merges=merges, **special)


def _opt_tokenizer():
    return gpt2_tokenizer(
        bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>", add_bos_token=True
    )


def _bloom_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train(["<unk>", "<s>", "</s>", "<pad>"])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # BLOOM's tokenizer.json adds no special token in front (nor behind)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>",
    )  # fmt: skip


def _xglm_tokenizer():
    from transformers import XGLMTokenizer

    vocab, _ = _train(["<s>", "<pad>", "</s>", "<unk>"], kind="unigram")
    return XGLMTokenizer(vocab=vocab)  # puts </s> (not its BOS <s>) in front of every text


def _llama2_tokenizer():
    from transformers import LlamaTokenizer

    vocab, merges = _train(["<unk>", "<s>", "</s>"], kind="metaspace")
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def _template_tokenizer(bos: str, eos: str, pad: str):
    """A Llama-3-style tokenizer: byte-level BPE whose post-processor puts ``bos`` first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = list(dict.fromkeys([bos, eos, pad]))
    vocab, merges = _train(special)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad
    )


def _qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    vocab, merges = _train(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    chat = ["<|im_start|>", "<|im_end|>"]  # special, as in Qwen's tokenizer.json
    return Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=chat)  # no BOS


def _gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab, merges = _train(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], kind="metaspace")
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def _cohere_tokenizer():
    from transformers import CohereTokenizer

    special = ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>"]
    vocab, merges = _train([*special, "<|END_OF_TURN_TOKEN|>"])
    return CohereTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def _falcon_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train([">>ABSTRACT<<", ">>INTRODUCTION<<", "<|endoftext|>"])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def _smollm2_tokenizer():
    """SmolLM2-Instruct's: a GPT-2 tokenizer whose BOS is the chat-turn token <|im_start|>."""
    tokenizer = gpt2_tokenizer(
        bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tokenizer.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    )
    return tokenizer


def _ids(tokenizer) -> dict:
    """The special ids a config takes from its tokenizer."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return {"bos_token_id": bos, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad}


def _llama_like(config_class: str, d_mlp: int, architecture: str, **extra):
    def build(tokenizer):
        import transformers

        return getattr(transformers, config_class)(
            vocab_size=len(tokenizer),
            hidden_size=D_MODEL,
            intermediate_size=d_mlp,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=N_HEADS,
            num_key_value_heads=2,
            max_position_embeddings=256,
            architectures=[architecture],
            **_ids(tokenizer),
            **extra,
        )

    return build


def _gpt2_config(tokenizer):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer), n_embd=D_MODEL, n_inner=3 * D_MODEL, n_layer=N_LAYERS,
        n_head=N_HEADS, n_positions=256, architectures=["GPT2LMHeadModel"], **_ids(tokenizer),
    )  # fmt: skip


def _bloom_config(tokenizer):
    from transformers import BloomConfig

    # BloomMLP is 4 x hidden_size, fixed: the one family without another ratio
    return BloomConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
        architectures=["BloomForCausalLM"], **_ids(tokenizer),
    )  # fmt: skip


def _xglm_config(ratio: int):
    def build(tokenizer):
        from transformers import XGLMConfig

        return XGLMConfig(
            vocab_size=len(tokenizer), d_model=D_MODEL, ffn_dim=ratio * D_MODEL,
            num_layers=N_LAYERS, attention_heads=N_HEADS, max_position_embeddings=256,
            architectures=["XGLMForCausalLM"], **_ids(tokenizer),
        )  # fmt: skip

    return build


def _opt_config(tokenizer):
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, ffn_dim=3 * D_MODEL,
        num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, max_position_embeddings=256,
        word_embed_proj_dim=D_MODEL, architectures=["OPTForCausalLM"], **_ids(tokenizer),
    )  # fmt: skip


def _falcon_config(tokenizer):
    from transformers import FalconConfig

    return FalconConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, ffn_hidden_size=3 * D_MODEL,
        num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, max_position_embeddings=256,
        architectures=["FalconForCausalLM"], **_ids(tokenizer),
    )  # fmt: skip


def _phi_config(tokenizer):
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, intermediate_size=3 * D_MODEL,
        num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, max_position_embeddings=256,
        architectures=["PhiForCausalLM"], **_ids(tokenizer),
    )  # fmt: skip


_GEMMA = {"head_dim": 8, "sliding_window": 16, "query_pre_attn_scalar": 8}

FAMILIES: tuple[Family, ...] = (
    Family("gpt2", "GPT2LMHeadModel", 96, False, "<|endoftext|>", "added",
           gpt2_tokenizer, _gpt2_config),
    Family("bloom", "BloomForCausalLM", 128, False, "<s>", "added",
           _bloom_tokenizer, _bloom_config),
    Family("xglm-4x", "XGLMForCausalLM", 128, False, "</s>", "tokenizer",
           _xglm_tokenizer, _xglm_config(4)),
    Family("xglm-8x", "XGLMForCausalLM", 256, False, "</s>", "tokenizer",
           _xglm_tokenizer, _xglm_config(8)),
    Family("opt", "OPTForCausalLM", 96, False, "</s>", "tokenizer", _opt_tokenizer, _opt_config),
    Family("llama2", "LlamaForCausalLM", 88, True, "<s>", "tokenizer", _llama2_tokenizer,
           _llama_like("LlamaConfig", 88, "LlamaForCausalLM")),
    Family("llama3", "LlamaForCausalLM", 112, True, "<|begin_of_text|>", "tokenizer",
           lambda: _template_tokenizer("<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>"),
           _llama_like("LlamaConfig", 112, "LlamaForCausalLM")),
    Family("mistral", "MistralForCausalLM", 112, True, "<s>", "tokenizer", _llama2_tokenizer,
           _llama_like("MistralConfig", 112, "MistralForCausalLM")),
    Family("qwen2", "Qwen2ForCausalLM", 72, True, None, "none", _qwen_tokenizer,
           _llama_like("Qwen2Config", 72, "Qwen2ForCausalLM")),
    Family("qwen3", "Qwen3ForCausalLM", 80, True, None, "none", _qwen_tokenizer,
           _llama_like("Qwen3Config", 80, "Qwen3ForCausalLM", head_dim=8)),
    Family("gemma2", "Gemma2ForCausalLM", 144, True, "<bos>", "tokenizer", _gemma_tokenizer,
           _llama_like("Gemma2Config", 144, "Gemma2ForCausalLM", **_GEMMA)),
    Family("gemma3", "Gemma3ForCausalLM", 160, True, "<bos>", "tokenizer", _gemma_tokenizer,
           _llama_like("Gemma3TextConfig", 160, "Gemma3ForCausalLM", **_GEMMA)),
    Family("cohere", "CohereForCausalLM", 104, True, "<BOS_TOKEN>", "tokenizer",
           _cohere_tokenizer, _llama_like("CohereConfig", 104, "CohereForCausalLM")),
    Family("phi3", "Phi3ForCausalLM", 120, True, "<s>", "added",
           lambda: _llama2_tokenizer_without_bos(),
           _llama_like("Phi3Config", 120, "Phi3ForCausalLM")),
    Family("phi", "PhiForCausalLM", 96, False, "<|endoftext|>", "added",
           gpt2_tokenizer, _phi_config),
    Family("falcon", "FalconForCausalLM", 96, False, None, "none",
           _falcon_tokenizer, _falcon_config),
    Family("smollm2", "LlamaForCausalLM", 88, True, None, "none", _smollm2_tokenizer,
           _llama_like("LlamaConfig", 88, "LlamaForCausalLM")),
)  # fmt: skip


def _llama2_tokenizer_without_bos():
    """Phi-3's: Llama's tokenizer class with ``add_bos_token: false`` in its config."""
    from transformers import LlamaTokenizer

    vocab, merges = _train(["<unk>", "<s>", "</s>", "<|endoftext|>"], kind="metaspace")
    return LlamaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=False, pad_token="<|endoftext|>"
    )


def save_family(family: Family, folder: Path, seed: int = 0) -> Path:
    """Build ``family``'s tiny random model and tokenizer and save both into ``folder``."""
    from transformers import AutoModelForCausalLM

    tokenizer = family.tokenizer()
    config = family.config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # random init leaves some norms at exactly 1 and biases at 0; jitter every weight so
        # the hooks see a model whose every parameter matters
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
