"""Tiny random models for tests, examples and smoke runs (built offline in well under a second).

:class:`TinyModelConfig` describes one; :func:`build_tiny_tokenizer` and
:func:`build_tiny_hf_model` build its byte-level tokenizer and seeded ``transformers`` model;
:func:`mlinguality.model.load_model` wraps them in a TransformerBridge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from mlinguality.errors import ModelLoadError

__all__ = ["TinyModelConfig", "build_tiny_hf_model", "build_tiny_tokenizer", "tiny_config"]


@dataclass
class TinyModelConfig:
    """A small random model for tests and examples (built offline in well under a second).

    Attributes:
        architecture: ``"gemma3"`` (gated MLP, like the default model) or ``"gpt2"`` (plain MLP).
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        d_mlp: MLP hidden width (the neurons studied).
        n_heads: Attention heads.
        seed: Seed of the random weights.
        vocab_size: Byte-level BPE vocabulary size (>= 260: 256 bytes + 4 special tokens).
    """

    architecture: Literal["gemma3", "gpt2"] = "gemma3"
    n_layers: int = 2
    d_model: int = 32
    d_mlp: int = 64
    n_heads: int = 2
    seed: int = 0
    vocab_size: int = 400
    training_text: list[str] = field(default_factory=lambda: list(_TINY_TRAINING_TEXT))

    def __post_init__(self) -> None:
        if self.architecture not in ("gemma3", "gpt2"):
            raise ValueError(f"TinyModelConfig.architecture: unknown {self.architecture!r}")
        if self.d_model % self.n_heads:
            raise ValueError("TinyModelConfig: d_model must be divisible by n_heads")
        if self.vocab_size < 260:
            raise ValueError("TinyModelConfig.vocab_size must be >= 260")


# A little multilingual text so the tiny tokenizer learns merges in several scripts.
_TINY_TRAINING_TEXT = (
    "Blessed are the peacemakers: for they shall be called the children of God.",
    "Heureux ceux qui procurent la paix, car ils seront appelés fils de Dieu!",
    "Selig sind die Friedfertigen; denn sie werden Gottes Kinder heißen!",
    "Блаженны миротворцы, ибо они будут наречены сынами Божиими.",
    "धन्य हैं वे, जो मेल करवानेवाले हैं, क्योंकि वे परमेश्वर के पुत्र कहलाएँगे।",
    "使人和平的人有福了， 因为他们必称为 神的儿子。",
    "In the beginning God created the heaven and the earth.",
    "Au commencement, Dieu créa les cieux et la terre.",
)


def tiny_config(spec: str, seed: int = 0) -> TinyModelConfig | None:
    """The TinyModelConfig a ``"tiny"`` / ``"tiny:gpt2"`` spec stands for (else None)."""
    if spec != "tiny" and not spec.startswith("tiny:"):
        return None
    architecture = spec.partition(":")[2] or "gemma3"
    if architecture not in ("gemma3", "gpt2"):
        raise ModelLoadError(f"model spec {spec!r}: use 'tiny', 'tiny:gemma3' or 'tiny:gpt2'")
    return TinyModelConfig(architecture=architecture, n_layers=4, d_model=32, d_mlp=64, seed=seed)


def build_tiny_tokenizer(config: TinyModelConfig):
    """A byte-level BPE tokenizer (every script encodes) with <pad>, <eos>, <bos>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(config.training_text, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", special.index("<bos>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos_token=True,
        name_or_path=f"tiny-{config.architecture}",
    )


def build_tiny_hf_model(config: TinyModelConfig, vocab_size: int):
    """The random ``transformers`` causal LM behind a TinyModelConfig (seeded)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config

    if config.architecture == "gemma3":
        hf_config = Gemma3TextConfig(
            vocab_size=vocab_size,
            hidden_size=config.d_model,
            intermediate_size=config.d_mlp,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=1,
            head_dim=config.d_model // config.n_heads,
            max_position_embeddings=512,
            sliding_window=16,
            layer_types=["full_attention"] * config.n_layers,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
            architectures=["Gemma3ForCausalLM"],
        )
    else:
        hf_config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=config.d_model,
            n_inner=config.d_mlp,
            n_layer=config.n_layers,
            n_head=config.n_heads,
            n_positions=512,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
            architectures=["GPT2LMHeadModel"],
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    return model.eval()
