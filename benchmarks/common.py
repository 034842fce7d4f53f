"""What every benchmark takes: ``--model SPEC`` and ``--corpus SOURCE``.

Model specs are those of :func:`mlinguality.load_model` (``gemma-3-270m``, a local Hugging Face
folder, a hub name) plus two for speed work:

- ``tiny``: the tiny random test model;
- ``random:DIR[:key=value,...]``: a model with *random weights* built from ``DIR/config.json``
  (and ``DIR``'s tokenizer), optionally with config fields overridden. Right for speed and
  CPU/GPU agreement checks, meaningless for selection results. For example Gemma 3 1B's shape
  with Gemma's tokenizer::

      random:~/.cache/mlinguality/gemma-3-270m:num_hidden_layers=26,hidden_size=1152,\\
          intermediate_size=6912,num_attention_heads=4,num_key_value_heads=1,head_dim=256

Corpus sources are those of :func:`mlinguality.corpus.load_corpus` (``bible``, a TSV/CSV/JSONL
file or a Moses folder).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch


def add_model_and_corpus(parser: argparse.ArgumentParser, model: str = "gemma-3-270m") -> None:
    parser.add_argument(
        "--model", default=model, help="gemma-3-270m, a folder, a hub name, tiny, random:DIR"
    )
    parser.add_argument("--corpus", default="bible", help="bible, or a TSV/CSV/JSONL file")


def load_bench_model(spec: str, device: str = "cpu", dtype: str = "float32"):
    """:func:`mlinguality.load_model`, plus ``tiny`` and ``random:DIR[:overrides]``."""
    from mlinguality import TinyModelConfig, load_model

    if spec == "tiny":
        return load_model(TinyModelConfig(), device=device, dtype=dtype)
    if not spec.startswith("random:"):
        return load_model(spec, device=device, dtype=dtype)
    return _random_model(spec.removeprefix("random:"), device, dtype)


def _random_model(text: str, device: str, dtype: str):
    from mlinguality.model import _boot, to_dtype, validate_model

    hf_model, tokenizer = random_hf_model(text)
    name = Path(text.partition(":")[0]).expanduser().name
    bridge = _boot(hf_model, tokenizer, f"random:{name}", device, to_dtype(dtype))
    validate_model(bridge, f"random:{text}")
    return bridge


def random_hf_model(text: str, init_device: str = "cpu"):
    """A transformers model with random weights (``torch.manual_seed(0)``, float32, drawn on the
    CPU by default, so the same weights on every machine) and its tokenizer, from
    ``DIR[:overrides]``. ``init_device="cuda"`` draws them there (faster for large shapes)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mlinguality import load_model

    folder, _, overrides = text.partition(":")
    folder = Path(folder).expanduser()
    if folder.name == "gemma-3-270m" and not folder.exists():
        load_model("gemma-3-270m")  # converts Gemma once, which provides config and tokenizer
    data = json.loads((folder / "config.json").read_text())
    for item in filter(None, re.split(r",(?=\w+=)", overrides)):  # values may hold commas
        key, _, value = item.partition("=")
        data[key] = json.loads(value)
    config = AutoConfig.for_model(**data)
    torch.manual_seed(0)
    with torch.device(init_device):
        hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return hf_model, AutoTokenizer.from_pretrained(folder)


def load_bench_corpus(source: str, langs: list[str], limit: int, seed: int = 0, **options):
    from mlinguality.corpus import load_corpus

    return load_corpus(source, langs, limit=limit, seed=seed, **options)
