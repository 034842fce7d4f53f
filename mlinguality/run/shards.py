"""``mlinguality collect CONFIG --shard I/N --out DIR`` and ``mlinguality merge DIR... --out DIR``.

Sharded collection without torch.distributed (Slurm arrays, sweep agents, several machines):
each job collects one token-balanced shard of the selection split and writes it as a stats
folder; ``merge`` combines the folders, refusing shards of another model, dtype, position
rule, BOS rule, hook or corpus (one line naming the field); ``mlinguality run CONFIG --set
collection.stats=DIR`` then starts from the merged statistics instead of collecting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlinguality.errors import MlingualityError


def collect_command(args: argparse.Namespace) -> int:
    """Collect shard I of N of the config's selection split into ``--out``."""
    from mlinguality.activations.distributed import collect_shard, parse_shard
    from mlinguality.activations.stats import save_stats
    from mlinguality.run.config import RunConfig
    from mlinguality.run.inputs import RunInputs

    shard, n_shards = parse_shard(args.shard)
    config = RunConfig.load(args.config).with_overrides(list(args.set or []))
    inputs = RunInputs(config)
    _, select, _ = inputs.splits
    coll = config.collection
    stats = collect_shard(
        inputs.model,
        select,
        config.collection_langs,  # corpus.langs and the same-language controls
        shard,
        n_shards,
        positions=coll.positions,
        include_bos=coll.include_bos,
        per_example=coll.per_example,
        batch_tokens=config.collection_batch_tokens,
        progress=not args.quiet,
    )
    save_stats(stats, args.out)
    sys.stdout.write(f"shard {shard}/{n_shards}: {len(stats)} languages -> {args.out}\n")
    return 0


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
        if sorted(lang_stats.example_ids) != sorted(select.ids) or "shard" in lang_stats.meta:
            raise ProvenanceError(
                f"collection.stats {folder}: {lang} holds {len(lang_stats.example_ids)} of "
                f"{len(select)} examples; merge every shard first"
            )
        position = {example: index for index, example in enumerate(lang_stats.example_ids)}
        stats[lang] = lang_stats.reorder([position[example] for example in select.ids])
    return stats


def merge_command(args: argparse.Namespace) -> int:
    merged = merge_folders(args.folders, args.out)
    counts = {lang: stats.n_tokens for lang, stats in merged.items()}
    sys.stdout.write(f"merged {len(args.folders)} shards -> {args.out}: {json.dumps(counts)}\n")
    return 0


def add_shard_commands(commands) -> None:
    """Register ``collect`` and ``merge`` on the CLI's subcommands."""
    collect = commands.add_parser(
        "collect", help="collect one shard of a run's statistics (no torch.distributed)"
    )
    collect.add_argument("config", type=Path, help="the run's YAML config")
    collect.add_argument("--shard", required=True, metavar="I/N", help="shard I of N (0-based)")
    collect.add_argument("--out", required=True, type=Path, help="folder for this shard's stats")
    collect.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config value"
    )
    collect.add_argument("--quiet", action="store_true", help="no progress bar")
    collect.set_defaults(handler=collect_command)
    merge = commands.add_parser("merge", help="merge shard folders written by `collect --shard`")
    merge.add_argument("folders", nargs="+", type=Path, help="shard folders (collect --out)")
    merge.add_argument("--out", required=True, type=Path, help="folder for the merged stats")
    merge.set_defaults(handler=merge_command)
