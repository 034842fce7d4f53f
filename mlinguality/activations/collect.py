"""Stage 3: stream MLP key activations into per-language sufficient statistics.

:func:`collect` runs the model over each language of a parallel corpus in length-sorted batches.
Hooks on ``blocks.{L}.mlp.hook_post`` (and ``hook_pre``, the gate pre-activation of gated MLPs)
reduce each batch in place into :class:`~mlinguality.activations.stats.ActivationStats`; the raw activations
are never kept. The forward pass ends as soon as the last layer's hook has fired, so the final
norm and the unembedding (most of the FLOPs of a 262k-vocabulary model) never run.

Which positions count (``positions``):

- ``all``: every real token; ``last``: the last real token; ``word_final``: the last token of each
  whitespace word. In a causal model the activation at position ``i`` depends only on tokens
  ``<= i``, so one pass gives the numbers of the seed authors' one-forward-per-word-prefix loop
  (:func:`word_final_prefix_loop`), up to tokenizer boundary effects (docs/method.md).
- Padding never counts. BOS is excluded by default: its activation is the same for every text
  of every language (it sees only itself), so it adds identical mass to every language's
  statistics and dilutes differences; ``include_bos=True`` keeps it.

With ``residual=True`` the same forward pass also records ``blocks.{L}.hook_resid_post`` (the
bridge's alias of ``blocks.{L}.hook_out``, the block's output): a per-example mean over the
counted positions and a seeded sample of positions with their next tokens, for the logit lens
(:mod:`mlinguality.activations.residual`). The forward then ends at the last layer's
``hook_resid_post`` instead of its ``hook_post`` (one MLP down projection and residual add
later; the final norm and the unembedding still never run).

A run with ``checkpoint_dir`` saves each language's partial statistics atomically (at most every
``checkpoint_every_s`` seconds, and when a language finishes); a run killed midway resumes from
there and ends with exactly the statistics of an uninterrupted run (same batches, same order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mlinguality.activations.batching import (
    Batch,
    PaddingSide,
    Positions,
    TokenizedText,
    default_max_batch_size,
    ensure_eval,
    pad_batch,
    pad_token_id,
    plan_batches,
    position_mask,
    tokenize_texts,
    word_end_tokens,
)
from mlinguality.activations.reducer import BatchReducer, StopForward
from mlinguality.activations.residual import (
    ResidualRecorder,
    empty_residual_fields,
    lens_sample,
    residual_meta,
)
from mlinguality.activations.stats import ActivationStats, ProvenanceError
from mlinguality.choices import choices
from mlinguality.corpus.adapters import as_corpus
from mlinguality.errors import MlingualityError
from mlinguality.families import is_gated  # noqa: F401 (re-exported: activations.is_gated)
from mlinguality.types import (
    HOOK_POST,
    HOOK_PRE,
    HookPoint,
    MlpActs,
    TokenIds,
    hook_post_name,
    hook_pre_name,
    resid_post_name,
)

logger = logging.getLogger(__name__)

POSITIONS = choices(Positions)


def collect(
    model,
    corpus,
    langs: Sequence[str] | None = None,
    positions: str = "all",
    include_bos: bool = False,
    per_example: bool = False,
    batch_tokens: int = 4096,
    max_batch_size: int | None = None,
    padding_side: str = "right",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
    progress: bool = True,
    residual: bool = False,
    lens_positions: int = 256,
    lens_seed: int = 0,
) -> dict[str, ActivationStats]:
    """Per-language activation statistics of every MLP neuron over ``corpus``.

    Choices are plain strings (checked here, with a one-line error) rather than ``Literal`` types,
    so that a bad value from a config or script gets a readable message.

    Args:
        model: A TransformerBridge from :func:`mlinguality.load_model`.
        corpus: A ParallelCorpus (anything with ``.ids`` and ``.texts(lang)``), a
            ``{lang: [texts]}`` dict, a pandas DataFrame or a ``datasets.Dataset``
            (:func:`mlinguality.corpus.as_corpus`).
        langs: Languages to collect (default: all of the corpus's).
        positions: ``"all"``, ``"last"`` or ``"word_final"`` (see the module docstring).
        include_bos: Count the BOS position too.
        per_example: Also keep the per-example mean, share of positive activations and (gated
            MLPs) share of positive gate pre-activations (``[example, layer, d_mlp]``, float32),
            needed by per-example metrics and tests.
        batch_tokens: Padded tokens per batch (batch size x longest example).
        max_batch_size: Upper bound on examples per batch (default: ``batch_tokens // 64``,
            at least 64, so that a GPU's larger ``batch_tokens`` also buys more rows).
        padding_side: ``"right"`` or ``"left"``; the statistics are the same either way.
        checkpoint_dir: Where to save and resume partial statistics (one file per language).
        checkpoint_every_s: Minimum seconds between checkpoints of one language.
        progress: Show a progress bar over tokens.
        residual: Also record ``blocks.{L}.hook_resid_post`` in the same pass:
            ``example_resid_mean`` ``[example, layer, d_model]`` (mean over the counted
            positions) and the lens sample ``lens_resid`` ``[sample, layer, d_model]``,
            ``lens_next`` ``[sample]``, ``lens_where`` ``[sample, 2]`` (float32 / int64;
            :mod:`mlinguality.activations.residual`). The MLP statistics are unchanged.
        lens_positions: At most this many sampled positions per language (counted positions
            that have a next token; none with ``positions="last"``).
        lens_seed: Seed of the sample (which depends on nothing else but the tokens and ids).

    Returns:
        ``{lang: ActivationStats}`` in the order of ``langs``.

    >>> from mlinguality import TinyModelConfig, load_model
    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> class Corpus:
    ...     ids = ["a", "b"]
    ...     def texts(self, lang):
    ...         return {"en": ["Blessed are they", "Amen"], "fr": ["Heureux", "Amen"]}[lang]
    >>> stats = collect(model, Corpus(), ["en", "fr"], progress=False)
    >>> stats["en"].n_tokens == sum(len(model.tokenizer(t).input_ids) - 1 for t in Corpus().texts("en"))
    True
    """
    if positions not in POSITIONS:
        raise MlingualityError(f"positions: unknown {positions!r}; choose one of {POSITIONS}")
    if residual and lens_positions < 0:
        raise MlingualityError(f"lens_positions: {lens_positions} is negative")
    if padding_side not in ("left", "right"):
        raise MlingualityError(f"padding_side: unknown {padding_side!r}; choose 'left' or 'right'")
    corpus = as_corpus(corpus)
    ensure_eval(model)
    langs = list(langs if langs is not None else corpus.langs)
    ids = [str(example_id) for example_id in corpus.ids]
    tokenized = {
        lang: tokenize_texts(
            model.tokenizer, corpus.texts(lang), word_final=positions == "word_final"
        )
        for lang in langs
    }
    if positions == "word_final":
        _warn_if_few_words(corpus, langs)
    total = sum(len(text.ids) for texts in tokenized.values() for text in texts)
    bar = _progress_bar(total, progress)
    result = {}
    try:
        for lang in langs:
            result[lang] = _collect_language(
                model,
                lang,
                ids,
                tokenized[lang],
                positions=positions,
                include_bos=include_bos,
                per_example=per_example,
                batch_tokens=batch_tokens,
                max_batch_size=max_batch_size or default_max_batch_size(batch_tokens),
                padding_side=padding_side,
                checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
                checkpoint_every_s=checkpoint_every_s,
                bar=bar,
                lens=(lens_positions, lens_seed) if residual else None,
            )
    finally:
        bar.close()
    return result


def _collect_language(
    model,
    lang: str,
    ids: list[str],
    texts: list[TokenizedText],
    *,
    positions: Positions,
    include_bos: bool,
    per_example: bool,
    batch_tokens: int,
    max_batch_size: int,
    padding_side: PaddingSide,
    checkpoint_dir: Path | None,
    checkpoint_every_s: float,
    bar,
    lens: tuple[int, int] | None = None,
) -> ActivationStats:
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    gated = is_gated(model)
    batches = plan_batches([len(text.ids) for text in texts], batch_tokens, max_batch_size)
    meta = {
        "model": str(getattr(model.cfg, "model_name", "")),
        "n_layers": n_layers,
        "d_mlp": d_mlp,
        "positions": positions,
        "include_bos": include_bos,
        "per_example": per_example,
        "hook": HOOK_POST.replace("{layer}", "{L}"),
        "gate_hook": HOOK_PRE.replace("{layer}", "{L}") if gated else None,
        "dtype": str(next(model.parameters()).dtype),
        "plan": _fingerprint(ids, texts, batches),
    }
    if lens is not None:  # absent otherwise: MLP-only files and checkpoints stay as they were
        meta.update(residual_meta(*lens))
    checkpoint = checkpoint_dir / f"{lang}.safetensors" if checkpoint_dir else None
    stats, done = _resume(checkpoint, meta) if checkpoint else (None, 0)
    if stats is None:
        stats = ActivationStats.empty(lang, n_layers, d_mlp, gated, meta)
        stats.example_ids = list(ids)
        stats.example_n_tokens = torch.zeros(len(ids), dtype=torch.long)
        if per_example:
            stats.example_mean = torch.zeros((len(ids), n_layers, d_mlp))
            stats.example_frac_positive = torch.zeros((len(ids), n_layers, d_mlp))
            if gated:
                stats.example_frac_gate_positive = torch.zeros((len(ids), n_layers, d_mlp))
        if lens is not None:
            stats.lens_where, stats.lens_next = lens_sample(
                ids, texts, positions, include_bos, *lens
            )
            fields = empty_residual_fields(len(ids), n_layers, model.cfg.d_model, stats.lens_where)
            for name, value in fields.items():
                setattr(stats, name, value)
    bar.update(sum(len(texts[index].ids) for batch in batches[:done] for index in batch))
    device, pad_id = model.cfg.device, pad_token_id(model.tokenizer)
    reducer = BatchReducer(stats, device, per_example, stop_after_last=lens is None)
    hooks = [(hook_post_name(layer), reducer.post_hook(layer)) for layer in range(n_layers)]
    if gated:
        hooks += [(hook_pre_name(layer), reducer.pre_hook(layer)) for layer in range(n_layers)]
    recorder = None
    if lens is not None:  # its last layer's hook is the one that leaves the forward pass
        recorder = ResidualRecorder(stats, device, n_layers, model.cfg.d_model)
        hooks += [(resid_post_name(layer), recorder.hook(layer)) for layer in range(n_layers)]
    last_save = time.monotonic()
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for batch_number in range(done, len(batches)):
            # padded and masked on the host: the reducer knows every count without asking the device
            batch = pad_batch(texts, batches[batch_number], pad_id, padding_side)
            mask = position_mask(batch, texts, positions, include_bos)
            reducer.start(mask, batch.indices)
            if recorder is not None:
                recorder.start(mask, batch)
            forward_to_last_hook(model, batch, device)
            expected = set(range(n_layers))
            if reducer.fired != expected or (gated and reducer.gate_fired != expected):
                raise RuntimeError(f"hooks fired on layers {sorted(reducer.fired)} only")
            if recorder is not None:
                if recorder.fired != expected:
                    raise RuntimeError(f"resid hooks fired on {sorted(recorder.fired)} only")
                recorder.finish()
            shares = reducer.finish()
            stats.example_n_tokens[batch.indices] = reducer.counts
            if shares is not None:
                stats.example_mean[batch.indices] = shares["mean"]
                stats.example_frac_positive[batch.indices] = shares["frac_positive"]
                if gated:
                    stats.example_frac_gate_positive[batch.indices] = shares["frac_gate_positive"]
            bar.update(sum(batch.lengths))
            if checkpoint and time.monotonic() - last_save >= checkpoint_every_s:
                if recorder is not None:
                    recorder.flush()
                _save_checkpoint(reducer.to_stats(), checkpoint, batch_number + 1)
                last_save = time.monotonic()
    if recorder is not None:
        recorder.flush()
    stats = reducer.to_stats()
    if checkpoint:
        _save_checkpoint(stats, checkpoint, len(batches))
    stats.meta.pop("batches_done", None)
    return stats


def forward_to_last_hook(model, batch: Batch, device: str | torch.device = "cpu") -> None:
    """Run the model until the last hook needed raises :class:`StopForward` (collection's last
    layer, the examples pass's last chosen layer)."""
    try:
        model(
            batch.input_ids.to(device, non_blocking=True),
            attention_mask=batch.attention_mask.to(device, non_blocking=True),
            position_ids=batch.position_ids.to(device, non_blocking=True),
            return_type=None,
            use_cache=False,
        )
    except StopForward:
        return
    raise RuntimeError("the forward pass ended without reaching the last needed hook")


def _fingerprint(ids: list[str], texts: list[TokenizedText], batches: list[list[int]]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([ids, [text.ids for text in texts], batches]).encode())
    return digest.hexdigest()[:16]


def _resume(checkpoint: Path, meta: dict) -> tuple[ActivationStats | None, int]:
    if not checkpoint.exists():
        return None, 0
    stats = ActivationStats.load(checkpoint)
    saved = {key: value for key, value in stats.meta.items() if key != "batches_done"}
    if saved != meta:
        changed = sorted(key for key in meta if saved.get(key) != meta[key])
        raise ProvenanceError(
            f"checkpoint {checkpoint} was made with other settings ({', '.join(changed)}); "
            "use a fresh checkpoint_dir or delete it"
        )
    done = int(stats.meta.get("batches_done", 0))
    logger.info("resuming %s from %s after %d batches", stats.lang, checkpoint, done)
    return stats, done


def _save_checkpoint(stats: ActivationStats, path: Path, batches_done: int) -> None:
    stats.meta["batches_done"] = batches_done
    stats.save(path)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc="Collecting", disable=not enabled)


def _warn_if_few_words(corpus, langs: Sequence[str]) -> None:
    """word_final degenerates for scripts written without spaces (Chinese, Japanese, Thai)."""
    counts = {lang: [len(text.split()) for text in corpus.texts(lang)] for lang in langs}
    means = {lang: sum(c) / max(len(c), 1) for lang, c in counts.items()}
    top = max(means.values(), default=0.0)
    for lang, mean in means.items():
        if top and mean < top / 4:
            logger.warning(
                "word_final: %s has %.1f whitespace words per example against %.1f in the "
                "wordiest language (a script without spaces?); its word-final positions are few "
                "and long. Consider positions='all' or 'last' for it.",
                lang,
                mean,
                top,
            )


def hook_post_activations(
    model, input_ids: TokenIds, layers: Sequence[int]
) -> Float[Tensor, "batch pos layer d_mlp"]:
    """``hook_post`` of ``layers`` for unpadded ``input_ids``, leaving the forward after the last one."""
    captured: dict[int, Tensor] = {}
    last = max(layers)

    def keep(layer: int):
        def hook(acts: MlpActs, *, hook: HookPoint) -> None:
            captured[layer] = acts.detach().float().cpu()
            if layer == last:
                raise StopForward

        return hook

    hooks = [(hook_post_name(layer), keep(layer)) for layer in layers]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks), contextlib.suppress(StopForward):
        model(input_ids.to(model.cfg.device), return_type=None, use_cache=False)
    return torch.stack([captured[layer] for layer in layers], dim=2)


def word_final_prefix_loop(
    model, text: str, layers: Sequence[int] | None = None
) -> Float[Tensor, "word layer d_mlp"]:
    """The seed authors' reference: one forward per word prefix (batch 1), last token's hook_post.

    Slow by design (one forward per word); :func:`collect` with ``positions="word_final"``
    computes the same in one pass. Each forward still stops after the last needed layer, so
    comparisons with the one pass measure the prefix loop itself, not the unembedding.
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    rows = []
    for match in re.finditer(r"\S+", text):
        ids = model.tokenizer(text[: match.end()], return_tensors="pt").input_ids
        rows.append(hook_post_activations(model, ids, layers)[0, -1])
    return torch.stack(rows)


def word_final_agreement(model, texts: Sequence[str], layers: Sequence[int] | None = None) -> dict:
    """Compare one-pass ``word_final`` positions with the prefix loop, word by word.

    For each whitespace word, the prefix loop tokenises ``text[:word_end]`` on its own; the
    one pass reads the word's last token inside the whole text. They see the same tokens unless
    the tokenizer splits the prefix's end differently from the full text (a boundary effect).

    Returns:
        ``words``; ``same_tokens`` (words whose prefix tokenisation equals the full text's tokens
        up to the word-final token); ``max_abs_diff_same_tokens`` (largest activation difference
        over those words, float noise only); ``max_abs_diff_other`` (over the rest); ``examples``
        (up to 5 mismatching prefixes with both tokenisations).
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    words = same = 0
    diff_same = diff_other = 0.0
    examples = []
    for text in texts:
        loop = word_final_prefix_loop(model, text, layers)
        encoded = model.tokenizer(text, return_offsets_mapping=True)
        token_ids = list(encoded.input_ids)
        finals = word_end_tokens(text, encoded.offset_mapping)
        full = hook_post_activations(model, torch.tensor([token_ids]), layers)[0]
        ends = [match.end() for match in re.finditer(r"\S+", text)]
        for word, (end, final) in enumerate(zip(ends, finals, strict=True)):
            prefix_ids = model.tokenizer(text[:end]).input_ids
            diff = (full[final] - loop[word]).abs().max().item()
            words += 1
            if prefix_ids == token_ids[: final + 1]:
                same += 1
                diff_same = max(diff_same, diff)
            else:
                diff_other = max(diff_other, diff)
                if len(examples) < 5:
                    examples.append(
                        {
                            "prefix": text[:end][-30:],
                            "prefix_tail": model.tokenizer.convert_ids_to_tokens(prefix_ids[-2:]),
                            "in_text": model.tokenizer.convert_ids_to_tokens(
                                token_ids[max(final - 1, 0) : final + 2]
                            ),
                        }
                    )
    return {
        "words": words,
        "same_tokens": same,
        "max_abs_diff_same_tokens": diff_same,
        "max_abs_diff_other": diff_other,
        "examples": examples,
    }
