"""``mlinguality steer RUN_DIR --from en --to fr``: steer generation with a finished run's neurons.

The experiment itself is the run's ``steer`` step (:mod:`mlinguality.run.steps.steer`); this
command runs it on any finished run, with other pairs, strengths or prompts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlinguality.choices import WandbMode, cli_choices
from mlinguality.errors import MlingualityError


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _steer(args: argparse.Namespace) -> int:
    from mlinguality.run.config import RunConfig
    from mlinguality.run.inputs import RunInputs
    from mlinguality.run.mirror import log_steering
    from mlinguality.run.steps.steer import run_steering
    from mlinguality.run.tracking import Tracker

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").exists():
        raise MlingualityError(f"{run_dir}: no config.yaml there (not a run folder)")
    for name in ("stats", "selected_neurons.safetensors"):
        if not (run_dir / name).exists():
            raise MlingualityError(f"{run_dir}: no {name} (the run did not finish selection)")
    config = RunConfig.load(run_dir / "config.yaml")
    overrides = list(args.set or [])
    sources = _split(args.source) or list(config.corpus.langs)
    targets = _split(args.target) or list(config.corpus.langs)
    pairs = [f"{s}-{t}" for s in sources for t in targets if s != t]
    if not pairs:
        raise MlingualityError("steer: --from and --to give no pair of different languages")
    overrides.append(f"steering.pairs={','.join(pairs)}")
    if args.alpha:
        overrides.append(f"steering.alphas=[{args.alpha}]")
    if args.wandb:
        overrides.append(f"tracking.wandb={args.wandb}")
    config = config.with_overrides(overrides)
    inputs = RunInputs(config)
    _, select, held_out = inputs.splits
    from mlinguality.model import set_threads

    set_threads(config.model.threads)
    out = run_steering(
        config,
        run_dir,
        inputs.model,
        held_out,
        prompts_file=args.prompts,
        out_dir=Path(args.out) if args.out else None,
        selection=select,
    )
    tracker = Tracker(config.tracking, config.to_dict(), out, name=f"{run_dir.name}-steer")
    if tracker.mode != "disabled":
        tracker.start()
        log_steering(tracker, out)
        tracker.finish()
    sys.stdout.write(f"steering: {out / 'steering_summary.csv'}\n")
    return 0


def add_steer_command(commands) -> None:
    """Register ``mlinguality steer`` on the CLI's subcommands."""
    steer = commands.add_parser(
        "steer",
        help="steer generation from one language to another with a finished run's neurons",
        allow_abbrev=False,
    )
    steer.add_argument(
        "run_dir", type=Path, help="a finished run folder (stats + selected neurons)"
    )
    steer.add_argument("--from", dest="source", help="source language(s), e.g. en or en,fr")
    steer.add_argument("--to", dest="target", help="target language(s), e.g. fr or fr,de")
    steer.add_argument("--alpha", help="strength(s), e.g. 1 or 0.5,1,2 (default: the config's)")
    steer.add_argument("--prompts", type=Path, help="prompt file: lines, or lang<TAB>prompt")
    steer.add_argument("--out", help="output folder (default RUN_DIR/steering)")
    steer.add_argument(
        "--set", action="append", metavar="steering.KEY=VALUE", help="override a config value"
    )
    steer.add_argument(
        "--wandb",
        choices=cli_choices(WandbMode),
        default=None,
        help="W&B mode (default: the run's tracking.wandb)",
    )
    steer.set_defaults(handler=_steer)
