"""The ``mlinguality`` command line: a view of the library's stages and configs.

Subcommands:
    model check SPEC          load a model spec, validate it, print its shape
    corpus info SOURCE ...    per-language counts, lengths and drops of a parallel corpus
"""

from __future__ import annotations

import argparse
import logging
import sys

from mlinguality.errors import MlingualityError

logger = logging.getLogger("mlinguality")


def _model_check(args: argparse.Namespace) -> int:
    from mlinguality.model import load_model

    model = load_model(args.spec, device=args.device, dtype=args.dtype)
    sys.stdout.write(
        f"{args.spec}: {model.cfg.n_layers} layers x d_mlp={model.cfg.d_mlp}, "
        f"vocabulary {len(model.tokenizer)}\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlinguality", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="load and validate a model").add_subparsers(
        dest="action", required=True
    )
    check = model.add_parser("check", help="load SPEC and validate its MLP hooks and tokenizer")
    check.add_argument("spec", help="gemma-3-270m, a local model directory, or a hub name")
    check.add_argument("--device", default="cpu")
    check.add_argument("--dtype", default="float32")
    check.set_defaults(handler=_model_check)

    from mlinguality.corpus.cli import add_corpus_commands

    add_corpus_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input exits with status 2 and one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status = args.handler(args)
    except (MlingualityError, FileNotFoundError) as error:
        sys.stderr.write(f"mlinguality: error: {error}\n")
        sys.exit(2)
    sys.exit(status)


if __name__ == "__main__":
    main()
