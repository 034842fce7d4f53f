"""Subcommands that inspect: ``model check``, ``config show|keys``, ``compare``.

Registered on the ``mlinguality`` parser (:mod:`mlinguality.cli.main`) by :func:`add_model_commands`
and :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlinguality.choices import Dtype, choices


def _model_check(args: argparse.Namespace) -> int:
    from mlinguality.families import describe
    from mlinguality.model import load_model

    model = load_model(args.spec, device=args.device, dtype=args.dtype, verify=args.verify)
    sys.stdout.write(
        f"{args.spec}: {model.cfg.n_layers} layers x d_mlp={model.cfg.d_mlp}, "
        f"vocabulary {len(model.tokenizer)}\n"
    )
    sys.stdout.write("".join(f"  {line}\n" for line in describe(model).lines()))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from mlinguality.run.config import RunConfig

    config = RunConfig.load(args.config) if args.config else RunConfig()
    sys.stdout.write(config.with_overrides(list(args.set or [])).dump())
    return 0


def _config_keys(args: argparse.Namespace) -> int:
    from mlinguality.cli.reference import config_keys, config_markdown

    if args.markdown:
        sys.stdout.write(config_markdown())
        return 0
    rows = config_keys()
    width = max(len(row.key) for row in rows)
    for row in rows:
        sys.stdout.write(f"{row.key:<{width}}  {row.default:<14}  {row.help}\n")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from mlinguality.run.results import compare

    comparison = compare(args.run_a, args.run_b)
    text = comparison.markdown()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        plot = comparison.plot_profile(args.out / "profile_overlay.png")
        comparison.profile.to_csv(args.out / "profile.csv", index=False)
        comparison.overlap.to_csv(args.out / "neuron_overlap.csv", index=False)
        if comparison.ablation is not None:
            comparison.ablation.to_csv(args.out / "ablation_delta.csv", index_label="ablated")
        text += f"\n![profile overlay]({plot.name})\n"
        (args.out / "compare.md").write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``config`` and ``compare`` to the ``mlinguality`` subcommands."""
    config = commands.add_parser("config", help="print the resolved config or list every key")
    actions = config.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print the resolved config as YAML (after --set)")
    show.add_argument(
        "config", nargs="?", type=Path, help="YAML config (default: the built-in defaults)"
    )
    show.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one value (repeatable)",
    )
    show.set_defaults(handler=_config_show)
    keys = actions.add_parser("keys", help="list every config key with its default and meaning")
    keys.add_argument(
        "--markdown", action="store_true", help="print the Markdown reference table instead"
    )
    keys.set_defaults(handler=_config_keys)

    comp = commands.add_parser(
        "compare",
        help="compare two run folders: profile overlay, neuron overlap, ablation deltas",
        description="Compare run B against run A (differences are B - A); prints Markdown.",
    )
    comp.add_argument("run_a", type=Path, help="first run folder (runs/NAME-TIME)")
    comp.add_argument("run_b", type=Path, help="second run folder")
    comp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write compare.md, CSVs and profile_overlay.png into this folder "
        "(default: print only)",
    )
    comp.set_defaults(handler=_compare)


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``model check``."""
    model = commands.add_parser("model", help="load and validate a model").add_subparsers(
        dest="action", required=True
    )
    check = model.add_parser(
        "check",
        help="load SPEC, validate its MLP hooks and tokenizer, and print its family facts "
        "(MLP kind and width, firing, hooks, what goes in front of a text)",
    )
    check.add_argument("spec", help="gemma-3-270m, a local model directory, or a hub name")
    check.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    check.add_argument(
        "--dtype",
        default="float32",
        choices=choices(Dtype),
        help="weights dtype (default: float32)",
    )
    check.add_argument(
        "--verify",
        action="store_true",
        help="check the sha256 of every converted file (a load checks sizes and mtimes)",
    )
    check.set_defaults(handler=_model_check)
