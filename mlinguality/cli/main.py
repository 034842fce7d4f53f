"""The ``mlinguality`` command line: a view of the library's stages and configs.

Subcommands:
    model check SPEC          load a model spec, validate it, print its shape
    corpus info SOURCE ...    per-language counts, lengths and drops of a parallel corpus
    run CONFIG [--set k=v]    collect -> score -> select -> ablate -> report into runs/NAME-TIME/
    demo                      the main job (experiments/configs/paper.yaml)
    sweep FILE.yaml           run a W&B sweep file locally (grid, random), no server needed
    steer RUN_DIR --from en --to fr   steer generation with a finished run's language neurons
    neurons RUN_DIR [--lang fr]   neuron cards: top contexts, promoted tokens
    compare RUN_A RUN_B       profile overlay, neuron-set overlap and ablation deltas of two runs
    config show|keys          the resolved config as YAML; every key with default and meaning
    ablation-matrix           ablation matrices for many selection metrics, rates and modes
    profile                   per-layer selectivity profile and U-shape test on Bible verses
    word-final                one-pass word_final against the per-prefix loop
    collect CONFIG --shard I/N --out DIR    one shard of a run's statistics (no torch.distributed)
    merge DIR... --out DIR    merge shard folders (refuses other models, settings, corpora)

Under ``torchrun -m mlinguality run CONFIG`` the run is spread over the ranks (run/team.py).
Each subcommand's module in this package registers it; nothing imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mlinguality.cli.corpus import add_corpus_commands
from mlinguality.cli.experiments import add_experiment_commands
from mlinguality.cli.inspect import add_commands, add_model_commands
from mlinguality.cli.neurons import add_neurons_command
from mlinguality.cli.run import add_run_commands
from mlinguality.cli.shards import add_shard_commands
from mlinguality.cli.steer import add_steer_command
from mlinguality.errors import MlingualityError

logger = logging.getLogger("mlinguality")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlinguality", description=__doc__.splitlines()[0].replace("``", "")
    )
    from mlinguality import __version__

    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"mlinguality {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    add_model_commands(commands)
    add_corpus_commands(commands)
    add_steer_command(commands)
    add_shard_commands(commands)
    add_run_commands(commands)
    add_commands(commands)
    add_neurons_command(commands)
    add_experiment_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; every failure ends in one line on stderr and an exit status.

    Status 2: bad input (the line names the file, key or value and what to do). Status 1: a fault
    of the machine or a bug (``-v`` shows the traceback). Status 130: Ctrl-C or SIGTERM (the
    line says how to resume).
    """
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: the help, not a usage error
        parser.print_help(sys.stdout)
        sys.exit(2)
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
