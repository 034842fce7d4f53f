"""``mlinguality run``, ``demo`` and ``sweep``: configured runs and local sweeps.

Under ``torchrun -m mlinguality run CONFIG`` the run is spread over the ranks
(:mod:`mlinguality.run.team`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlinguality.choices import WandbMode, cli_choices
from mlinguality.errors import MlingualityError

# The main job; when the package is installed without the repository, the RunConfig defaults
# (which tests keep equal to this file) are used instead.
CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
PAPER_CONFIG = CONFIGS / "paper.yaml"


def resolve_config(path: Path) -> Path:
    """A config path as given, or (a bare name that is no file here) the file of that name
    under ``experiments/configs/``: ``paper`` or ``paper.yaml``."""
    if path.exists() or path.parent != Path("."):
        return path
    for name in (path.name, f"{path.name}.yaml"):
        shipped = CONFIGS / name
        if shipped.is_file():
            return shipped
    known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml"))) or "(none)"
    raise MlingualityError(
        f"config {path}: no such file here, nor under {CONFIGS} (shipped configs: {known})"
    )


def _run(args: argparse.Namespace) -> int:
    from mlinguality.run.config import RunConfig
    from mlinguality.run.overrides import agent_overrides
    from mlinguality.run.resume import saved_config

    extra = list(args.extra)
    if args.config is not None and "=" in args.config.name and not args.config.exists():
        extra.insert(0, str(args.config))  # `run key=value ...`: no config file, overrides only
        args.config = None
    # wandb agent's ${args_no_hyphens} passes section.key=value without the leading --
    extra = [arg if arg.startswith("-") else f"--{arg}" for arg in extra]
    overrides = list(args.set or []) + agent_overrides(extra)
    if args.wandb:
        overrides.append(f"tracking.wandb={args.wandb}")
    start_from = getattr(args, "start_from", None)
    if args.resume and start_from:
        raise MlingualityError("--resume and --from: give one (--from starts a new run)")
    earlier = args.resume or start_from
    if args.config is not None:
        config = RunConfig.load(resolve_config(args.config))
    elif earlier is not None:  # the earlier run's own config
        flag = "--resume" if args.resume else "--from"
        config = saved_config(earlier, flag)
    else:
        config = RunConfig()
    config = config.with_overrides(overrides)
    if args.dry_run:  # the resolved config, and nothing run
        sys.stdout.write(config.dump())
        return 0
    from mlinguality.run.runner import run_experiment  # heavy imports only once the config is valid
    from mlinguality.run.team import run_team, world_size

    if world_size() > 1:  # under torchrun: rank 0 leads, the others serve (run/team.py)
        run_dir = run_team(config, resume=args.resume, start_from=start_from)
    else:
        run_dir = run_experiment(config, resume=args.resume, start_from=start_from)
    if run_dir is not None:
        sys.stdout.write(f"report: {run_dir / 'report.md'}\n")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from mlinguality.run.sweep import run_sweep

    table = run_sweep(
        args.file,
        count=args.count,
        output_dir=args.output_dir,
        wandb_mode=args.wandb or "offline",
        dry_run=args.dry_run,
    )
    sys.stdout.write(f"sweep table: {table}\n")
    return 0


def _add_run_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable); --SECTION.KEY=VALUE works too (wandb agent)",
    )
    command.add_argument(
        "--wandb",
        choices=cli_choices(WandbMode),
        default=None,
        help="W&B mode (default: the config's tracking.wandb, 'auto': online with an API key, "
        "else offline)",
    )
    command.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="finish an interrupted run in its folder, with its own config (no other config, "
        "no --set)",
    )
    command.add_argument(
        "--from",
        dest="start_from",
        type=Path,
        metavar="RUN_DIR",
        help="start a new run (CONFIG, else RUN_DIR's config, with any --set) that copies in "
        "RUN_DIR's finished stages whose settings still match",
    )
    command.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config (YAML) and exit without running",
    )


_RUN_HELP = """\
Run the whole pipeline from a YAML config: collect MLP activations on a parallel corpus, score
each layer's language selectivity, select language-specific neurons, ablate them against
matched random neurons, and write RUN_DIR/report.md (runs/NAME-TIME/). Finished stages are
cached and reused; an interrupted run continues with --resume RUN_DIR.

examples:
  mlinguality run paper --dry-run                 # print the resolved config, run nothing
  mlinguality run paper --set corpus.limit=100    # the main job on 100 verses
  mlinguality run my.yaml --set model.threads=1   # on a busy machine

duration: the shipped paper config (= mlinguality demo) takes 4-9 min on a 2-core CPU, plus
~90 s once to convert Gemma 3 270M; its time grows with corpus.limit and ablation.eval_limit.
"""

_DEMO_HELP = """\
The main job: Gemma 3 270M on 400 Bible verses in en, fr, de, ru and hi, with every stage and
its controls (= mlinguality run experiments/configs/paper.yaml); writes runs/paper-TIME/.

examples:
  mlinguality demo
  mlinguality demo --set model.threads=1          # on a busy machine (load near the cores)
  mlinguality demo --wandb disabled --set plots=false

duration: 4-9 min on a 2-core CPU (2 threads, nothing else running), plus ~90 s the first time
to convert the model; far longer on a shared machine unless model.threads=1.
"""


def add_run_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``run``, ``demo`` and ``sweep``."""
    run = commands.add_parser(
        "run",
        help="run the whole pipeline from a YAML config",
        description=_RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    run.add_argument(
        "config",
        nargs="?",
        type=Path,
        help="a YAML file, or the name of one under experiments/configs/ (paper, paper.yaml)",
    )
    _add_run_options(run)
    run.set_defaults(handler=_run, accepts_overrides=True)
    demo = commands.add_parser(
        "demo",
        help="the main job: Gemma 3 270M, Bible, 5 languages",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_run_options(demo)
    demo.set_defaults(
        handler=_run,
        config=PAPER_CONFIG if PAPER_CONFIG.exists() else None,
        accepts_overrides=True,
    )
    sweep = commands.add_parser("sweep", help="run a W&B sweep file locally (grid, random)")
    sweep.add_argument("file", type=Path, help="a W&B sweep YAML (experiments/sweeps/)")
    sweep.add_argument("--count", type=int, help="number of runs (random; caps a grid)")
    sweep.add_argument(
        "--output-dir", default="runs", help="parent of the sweep folder (default: runs)"
    )
    sweep.add_argument(
        "--wandb",
        choices=cli_choices(WandbMode),
        default=None,
        help="W&B mode of every run (default: offline)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="write the commands, run nothing")
    sweep.set_defaults(handler=_sweep)
