"""``mlinguality corpus info SOURCE --langs en,fr,...``: per-language counts, lengths and drops."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mlinguality.choices import TsvQuoting, choices
from mlinguality.corpus.cleaning import CleaningConfig
from mlinguality.corpus.core import DROP_REASONS, ParallelCorpus
from mlinguality.corpus.loading import load_corpus
from mlinguality.errors import MlingualityError


@dataclass(frozen=True)
class LangInfo:
    """What ``corpus info`` reports for one language."""

    lang: str
    examples: int
    mean_chars: float
    mean_tokens: float | None
    dropped: dict[str, int]
    translation: str = ""


def describe(corpus: ParallelCorpus, tokenizer=None) -> list[LangInfo]:
    """Per-language example count, mean characters, mean tokens (if a tokenizer is given), drops.

    Tokens are counted without special tokens (no BOS), with the tokenizer's own ``__call__``.
    """
    infos = []
    for lang in corpus.langs:
        texts = corpus.texts(lang)
        n = len(texts)
        mean_chars = sum(map(len, texts)) / n if n else 0.0
        mean_tokens = None
        if tokenizer is not None and n:
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            mean_tokens = sum(map(len, ids)) / n
        infos.append(
            LangInfo(
                lang,
                n,
                mean_chars,
                mean_tokens,
                dict(corpus.drops_by_lang.get(lang, {})),
                corpus.translations.get(lang, ""),
            )
        )
    return infos


def format_info(corpus: ParallelCorpus, infos: list[LangInfo], books: str | None = None) -> str:
    """The ``corpus info`` report: a summary line and a per-language table."""
    dropped = sum(corpus.drops.values())
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in corpus.drops.items())
    where = f" (books {books})" if books else ""
    lines = [
        f"corpus {corpus.source}{where}: {len(corpus):,} examples in {', '.join(corpus.langs)}; "
        f"dropped {dropped:,}" + (f" ({reasons})" if reasons else ""),
        "dropped columns: examples whose text in that language was empty, an editor's fill-in, "
        "or in a pair of languages with an outlying length ratio",
    ]
    header = ["lang", "examples", "mean chars", "mean tokens", *DROP_REASONS, "translation"]
    rows = [
        [
            info.lang,
            f"{info.examples:,}",
            f"{info.mean_chars:.1f}",
            "-" if info.mean_tokens is None else f"{info.mean_tokens:.1f}",
            *(f"{info.dropped.get(reason, 0):,}" for reason in DROP_REASONS),
            info.translation,
        ]
        for info in infos
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def load_tokenizer(spec: str):
    """The tokenizer of a model spec, without loading weights where that is possible.

    ``gemma-3-270m`` and local model folders load the tokenizer files only; other specs
    (hub names) fall back to :func:`mlinguality.model.load_model`.
    """
    from mlinguality.model import GEMMA_SPEC, ensure_gemma_cache, load_model

    folder = ensure_gemma_cache() if spec == GEMMA_SPEC else Path(spec).expanduser()
    if folder.is_dir() and any(folder.glob("tokenizer*")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return load_model(spec).tokenizer


def parse_translations(spec: str | None) -> dict[str, str] | None:
    """``"en=WEB,de=s"`` -> ``{"en": "WEB", "de": "s"}``."""
    if not spec:
        return None
    pairs = {}
    for item in spec.split(","):
        lang, equals, name = item.partition("=")
        if not equals or not lang.strip() or not name.strip():
            raise MlingualityError(f"--translation: {item!r} is not LANG=NAME (e.g. en=WEB)")
        pairs[lang.strip()] = name.strip()
    return pairs


def _corpus_info(args: argparse.Namespace) -> int:
    clean: bool | CleaningConfig = True
    if args.no_clean:
        clean = False
    elif args.max_length_ratio is not None:
        try:
            clean = CleaningConfig(max_length_ratio=args.max_length_ratio)
        except ValueError as error:
            raise MlingualityError(f"--max-length-ratio: {error}") from None
    corpus = load_corpus(
        args.source,
        args.langs,
        books=args.books,
        limit=args.limit,
        seed=args.seed,
        translations=parse_translations(args.translation),
        clean=clean,
        tsv_quoting=args.tsv_quoting,
    )
    tokenizer = load_tokenizer(args.model) if args.model else None
    sys.stdout.write(format_info(corpus, describe(corpus, tokenizer), args.books))
    return 0


def add_corpus_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``corpus info``."""
    corpus = commands.add_parser("corpus", help="inspect parallel corpora").add_subparsers(
        dest="action", required=True
    )
    info = corpus.add_parser(
        "info", help="per-language examples, mean characters/tokens and drops of a corpus"
    )
    info.add_argument("source", help="'bible', a .tsv/.csv/.jsonl file, or a Moses prefix")
    info.add_argument("--langs", required=True, help="ISO 639-1 codes, e.g. en,fr,de")
    info.add_argument("--model", help="count tokens with this model's tokenizer (gemma-3-270m)")
    info.add_argument("--books", help="Bible books: NT, OT, Matthew, 40-43, Matthew-John")
    info.add_argument("--limit", type=int, help="keep a seeded sample of N examples")
    info.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    info.add_argument("--translation", help="Bible translations, e.g. en=WEB,de=SCH")
    info.add_argument(
        "--max-length-ratio", type=float, help="length-ratio filter factor (default 3)"
    )
    info.add_argument("--no-clean", action="store_true", help="texts as read; drop nothing")
    info.add_argument(
        "--tsv-quoting",
        choices=choices(TsvQuoting),
        default="literal",
        help="quote marks in a .tsv file: text (literal, default) or CSV quoting (csv)",
    )
    info.set_defaults(handler=_corpus_info)
