"""``mlinguality neurons RUN_DIR [--lang fr] [--layer 17] [--top 10]``: neuron cards as text.

Each card: the neuron's firing rate per language, its top contexts per language with the peak
token marked ``[[...]]``, and the tokens it promotes and suppresses (with their language).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlinguality.errors import MlingualityError


def _neurons(args: argparse.Namespace) -> int:
    from mlinguality.run.results import Run

    run = Run.load(args.run_dir)
    cards = run.neuron_cards(None if args.set == "all" else args.set)
    if args.lang:
        cards = [card for card in cards if card.data.get("lang") == args.lang]
    if args.layer is not None:
        cards = [card for card in cards if card.layer == args.layer]
    if args.neuron is not None:
        cards = [card for card in cards if card.neuron == args.neuron]
    if not cards:
        raise MlingualityError(
            f"neurons {args.run_dir}: no card matches (set {args.set}, lang {args.lang}, "
            f"layer {args.layer}, neuron {args.neuron})"
        )
    from mlinguality.selectivity.neurons import specificity_key

    metric = run.config.selectivity.select_metric
    cards.sort(key=lambda card: specificity_key(metric, card.data.get("score")))
    shown = cards[: args.limit]
    for card in shown:
        sys.stdout.write(card.to_text(top=args.top) + "\n\n")
    if len(cards) > len(shown):
        sys.stdout.write(f"({len(cards) - len(shown)} more: raise --limit)\n")
    return 0


def add_neurons_command(commands: argparse._SubParsersAction) -> None:
    """Register ``mlinguality neurons``."""
    neurons = commands.add_parser(
        "neurons",
        help="print neuron cards of a finished run: top contexts and promoted tokens",
        description=__doc__.splitlines()[0].replace("``", ""),
    )
    neurons.add_argument("run_dir", type=Path, help="a run folder with neurons/ (examples stage)")
    neurons.add_argument("--lang", help="only the neurons of this language, e.g. fr")
    neurons.add_argument("--layer", type=int, help="only this layer")
    neurons.add_argument("--neuron", type=int, help="only this neuron index")
    neurons.add_argument(
        "--set",
        choices=["selected", "random", "listed", "all"],
        default="selected",
        help="which cards (default: selected)",
    )
    neurons.add_argument("--top", type=int, default=5, help="contexts and tokens per card")
    neurons.add_argument(
        "--limit", type=int, default=10, help="cards at most, most language-specific first"
    )
    neurons.set_defaults(handler=_neurons)
