"""``mlinguality collect CONFIG --shard I/N --out DIR`` and ``mlinguality merge DIR... --out DIR``.

Sharded collection without torch.distributed (Slurm arrays, sweep agents, several machines);
the merging and its checks are :mod:`mlinguality.run.shards`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
        **config.residual_collection,
    )
    save_stats(stats, args.out)
    sys.stdout.write(f"shard {shard}/{n_shards}: {len(stats)} languages -> {args.out}\n")
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from mlinguality.run.shards import merge_folders

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
