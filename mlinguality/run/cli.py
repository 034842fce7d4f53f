"""The ``mlinguality`` command line: a view of the library's stages and configs.

Subcommands:
    model check SPEC          load a model spec, validate it, print its shape
    corpus info SOURCE ...    per-language counts, lengths and drops of a parallel corpus
    run CONFIG [--set k=v]    collect -> score -> select -> ablate -> report into runs/NAME-TIME/
    demo                      the main job (experiments/configs/paper.yaml)
    sweep FILE.yaml           run a W&B sweep file locally (grid, random), no server needed
    steer RUN_DIR --from en --to fr   steer generation with a finished run's language neurons
    compare RUN_A RUN_B       profile overlay, neuron-set overlap and ablation deltas of two runs
    config show|keys          the resolved config as YAML; every key with default and meaning
    ablation-matrix           ablation matrices for many selection metrics, rates and modes
    profile                   per-layer selectivity profile and U-shape test on Bible verses
    word-final                one-pass word_final against the per-prefix loop
    collect CONFIG --shard I/N --out DIR    one shard of a run's statistics (no torch.distributed)
    merge DIR... --out DIR    merge shard folders (refuses other models, settings, corpora)

Under ``torchrun -m mlinguality run CONFIG`` the run is spread over the ranks (run/distributed.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlinguality.errors import MlingualityError

logger = logging.getLogger("mlinguality")
# The main job; when the package is installed without the repository, the RunConfig defaults
# (which tests keep equal to this file) are used instead.
_PAPER_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "paper.yaml"


def _model_check(args: argparse.Namespace) -> int:
    from mlinguality.model import load_model

    model = load_model(args.spec, device=args.device, dtype=args.dtype, verify=args.verify)
    sys.stdout.write(
        f"{args.spec}: {model.cfg.n_layers} layers x d_mlp={model.cfg.d_mlp}, "
        f"vocabulary {len(model.tokenizer)}\n"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from mlinguality.run.config import RunConfig, agent_overrides

    extra = list(args.extra)
    if args.config is not None and "=" in args.config.name and not args.config.exists():
        extra.insert(0, str(args.config))  # `run key=value ...`: no config file, overrides only
        args.config = None
    # wandb agent's ${args_no_hyphens} passes section.key=value without the leading --
    extra = [arg if arg.startswith("-") else f"--{arg}" for arg in extra]
    overrides = list(args.set or []) + agent_overrides(extra)
    if args.wandb:
        overrides.append(f"tracking.wandb={args.wandb}")
    if args.resume:
        if not (args.resume / "config.yaml").is_file():
            raise MlingualityError(
                f"--resume {args.resume}: no config.yaml there (not a run folder)"
            )
        config = RunConfig.load(args.resume / "config.yaml").with_overrides(overrides)
    else:
        config = RunConfig.load(args.config) if args.config else RunConfig()
        config = config.with_overrides(overrides)
    if args.dry_run:  # the resolved config, and nothing run
        sys.stdout.write(config.dump())
        return 0
    from mlinguality.run.distributed import run_team, world_size
    from mlinguality.run.runner import run_experiment  # heavy imports only once the config is valid

    if world_size() > 1:  # under torchrun: rank 0 leads, the others serve (run/distributed.py)
        run_dir = run_team(config, resume=args.resume)
    else:
        run_dir = run_experiment(config, resume=args.resume)
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
        choices=["online", "offline", "disabled"],
        default=None,
        help="W&B mode (default: the config's tracking.wandb, 'auto': online with an API key, "
        "else offline)",
    )
    command.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run in its folder"
    )
    command.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config (YAML) and exit without running",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlinguality", description=__doc__.splitlines()[0].replace("``", "")
    )
    from mlinguality import __version__

    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"mlinguality {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="load and validate a model").add_subparsers(
        dest="action", required=True
    )
    check = model.add_parser("check", help="load SPEC and validate its MLP hooks and tokenizer")
    check.add_argument("spec", help="gemma-3-270m, a local model directory, or a hub name")
    check.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    check.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="weights dtype (default: float32)",
    )
    check.add_argument(
        "--verify",
        action="store_true",
        help="check the sha256 of every converted file (a load checks sizes and mtimes)",
    )
    check.set_defaults(handler=_model_check)

    from mlinguality.corpus.cli import add_corpus_commands
    from mlinguality.run.shards import add_shard_commands
    from mlinguality.run.steering import add_steer_command

    add_corpus_commands(commands)
    add_steer_command(commands)
    add_shard_commands(commands)

    run = commands.add_parser(
        "run", help="run the whole pipeline from a YAML config", allow_abbrev=False
    )
    run.add_argument("config", nargs="?", type=Path, help="YAML under experiments/configs/")
    _add_run_options(run)
    run.set_defaults(handler=_run, accepts_overrides=True)
    demo = commands.add_parser(
        "demo", help="the main job: Gemma 3 270M, Bible, 5 languages", allow_abbrev=False
    )
    _add_run_options(demo)
    demo.set_defaults(
        handler=_run,
        config=_PAPER_CONFIG if _PAPER_CONFIG.exists() else None,
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
        choices=["online", "offline", "disabled"],
        default=None,
        help="W&B mode of every run (default: offline)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="write the commands, run nothing")
    sweep.set_defaults(handler=_sweep)
    from mlinguality.run.commands import add_commands
    from mlinguality.run.experiments import add_experiment_commands

    add_commands(commands)
    add_experiment_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; every failure ends in one line on stderr and an exit status.

    Status 2: bad input (the line names the file, key or value and what to do). Status 1: a fault
    of the machine or a bug (``-v`` shows the traceback). Status 130: Ctrl-C or SIGTERM (the
    line says how to resume).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.extra = extra  # --section.key=value arguments, as `wandb agent` passes them
    if args.extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(args.extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from tqdm.contrib.logging import logging_redirect_tqdm

    previous = _terminate_as_interrupt()
    try:
        with logging_redirect_tqdm():  # log lines go above the progress bars, not through them
            status = args.handler(args)
    except MlingualityError as error:
        _fail(args, error, str(error), error.exit_status)
    except KeyboardInterrupt as error:
        _fail(args, error, str(error) or "interrupted", 130)
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        _fail(args, error, f"{where}{error.strerror or error}", 2 if error.filename else 1)
    except Exception as error:  # a bug: still one line, the traceback behind -v
        first = (str(error).splitlines() or [""])[0]
        message = (
            f"internal error {type(error).__name__}: {first} (rerun with -v for the traceback)"
        )
        _fail(args, error, message, 1)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    sys.exit(status)


def _fail(args: argparse.Namespace, error: BaseException, message: str, status: int) -> None:
    if args.verbose:
        import traceback

        traceback.print_exception(error)
    label = "mlinguality: " if status == 130 else "mlinguality: error: "
    sys.stderr.write(f"{label}{message}\n")
    sys.exit(status)


def _terminate_as_interrupt():
    """SIGTERM (a scheduler's stop, `kill`) stops a run like Ctrl-C: resumable, one line.

    Returns the previous handler (None when it could not be replaced).
    """
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a thread)
        return None


if __name__ == "__main__":
    main()
