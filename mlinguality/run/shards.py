"""Merging the statistics of sharded collections, and starting a run from them.

Sharded collection without torch.distributed (Slurm arrays, sweep agents, several machines):
each job collects one token-balanced shard of the selection split and writes it as a stats
folder; ``merge`` combines the folders, refusing shards of another model, dtype, position
rule, BOS rule, hook or corpus (one line naming the field); ``mlinguality run CONFIG --set
collection.stats=DIR`` then starts from the merged statistics instead of collecting. The commands are :mod:`mlinguality.cli.shards`.
"""

from __future__ import annotations

from pathlib import Path

from mlinguality.errors import MlingualityError


def merge_folders(folders: list[Path], out: Path) -> dict:
    """Merge stats folders (one file per language in each) into ``out``; the merged stats.

    Raises:
        MlingualityError: folders with other languages, or statistics of another provenance
            (the message names the field), or two folders holding the same example.
    """
    from mlinguality.activations.stats import load_stats, save_stats

    if not folders:
        raise MlingualityError("merge: name at least one stats folder")
    for folder in folders:
        if Path(folder).resolve() == Path(out).resolve():
            raise MlingualityError(
                f"merge: --out {out} is one of the shard folders merged; it would be "
                "overwritten: choose a new folder for the merged stats"
            )
    for folder in folders:
        if not any(Path(folder).glob("*.safetensors")):
            raise MlingualityError(f"merge: {folder} holds no statistics (*.safetensors)")
    parts = [load_stats(folder) for folder in folders]
    langs = list(parts[0])
    for folder, part in zip(folders[1:], parts[1:], strict=True):
        if sorted(part) != sorted(langs):
            raise MlingualityError(
                f"merge: {folder} holds {', '.join(sorted(part))}; {folders[0]} holds "
                f"{', '.join(sorted(langs))}"
            )
    merged = {}
    for lang in langs:
        total = parts[0][lang]
        for part in parts[1:]:
            total = total.merge(part[lang])
        # sorted by id whatever the order of the folders; a run puts them in corpus order
        order = sorted(range(len(total.example_ids)), key=total.example_ids.__getitem__)
        merged[lang] = total.reorder(order)
        merged[lang].meta.pop("shard", None)
        merged[lang].meta["merged_from"] = len(folders)
    save_stats(merged, out)
    return merged


def load_merged(config, inputs, folder: Path) -> dict:
    """Merged statistics for ``config``'s run, checked against what the run would collect, with
    the examples in the order of the selection split (as a collection in one process has them).

    Raises:
        MlingualityError: a missing language, or statistics of another model, dtype, setting
            or corpus (the message names the field), or a partial merge.
    """
    from mlinguality.activations.distributed import corpus_fingerprint
    from mlinguality.activations.stats import ProvenanceError, load_stats

    langs = list(config.collection_langs)
    if not Path(folder).is_dir():
        raise MlingualityError(f"collection.stats {folder}: no such folder")
    missing = [lang for lang in langs if not (Path(folder) / f"{lang}.safetensors").is_file()]
    if missing:
        raise MlingualityError(
            f"collection.stats {folder}: no statistics for {', '.join(missing)} "
            "(collect the shards with this config's corpus.langs and selectivity.control_pairs)"
        )
    stats = load_stats(folder, langs)
    _, select, _ = inputs.splits
    coll = config.collection
    model = inputs.model
    expected = {
        "model": str(getattr(model.cfg, "model_name", "")),
        "dtype": str(next(model.parameters()).dtype),
        "positions": coll.positions,
        "include_bos": coll.include_bos,
        "per_example": coll.per_example,
        "corpus": corpus_fingerprint(select, langs),
    }
    for lang, lang_stats in stats.items():
        for key, value in expected.items():
            if lang_stats.meta.get(key) != value:
                raise ProvenanceError(
                    f"collection.stats {folder}: {lang} {key} differs from the config "
                    f"({lang_stats.meta.get(key)!r} vs {value!r})"
                )
        wanted = config.residual_collection
        if wanted["residual"] and (
            lang_stats.example_resid_mean is None
            or lang_stats.meta.get("lens_positions") != wanted["lens_positions"]
            or lang_stats.meta.get("lens_seed") != wanted["lens_seed"]
        ):
            raise ProvenanceError(
                f"collection.stats {folder}: {lang} was collected without this config's "
                "residuals (lenses.enabled, lenses.lens_positions, seed); collect the shards with "
                "this config, or set lenses.enabled=false"
            )
        if sorted(lang_stats.example_ids) != sorted(select.ids) or "shard" in lang_stats.meta:
            raise ProvenanceError(
                f"collection.stats {folder}: {lang} holds {len(lang_stats.example_ids)} of "
                f"{len(select)} examples; merge every shard first"
            )
        position = {example: index for index, example in enumerate(lang_stats.example_ids)}
        stats[lang] = lang_stats.reorder([position[example] for example in select.ids])
    return stats
