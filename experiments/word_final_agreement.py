"""How often does one-pass word_final equal the seed authors' per-prefix loop on Gemma?

    python experiments/word_final_agreement.py --langs en,fr,ru,zh --verses 10

Prints, per language, the words compared, the share whose prefix tokenizes exactly like the full
verse (there the two methods must agree up to float noise), the largest activation difference on
those words and on the rest, and a few mismatching prefixes.
"""

from __future__ import annotations

import argparse
import json

import torch

from mlinguality import load_model
from mlinguality.activations.collect import word_final_agreement
from mlinguality.corpus import load_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,fr,ru,zh")
    parser.add_argument("--verses", type=int, default=10)
    parser.add_argument("--layers", default="0,4,8,12,17")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    langs = args.langs.split(",")
    layers = [int(layer) for layer in args.layers.split(",")]
    model = load_model("gemma-3-270m")
    corpus = load_corpus("bible", langs, limit=args.verses, seed=0)
    print("| lang | words | same tokens | max abs diff (same tokens) | max abs diff (others) |")
    print("|---|---|---|---|---|")
    reports = {}
    for lang in langs:
        report = word_final_agreement(model, corpus.texts(lang), layers)
        reports[lang] = report
        share = report["same_tokens"] / max(report["words"], 1)
        print(
            f"| {lang} | {report['words']} | {report['same_tokens']} ({share:.1%}) | "
            f"{report['max_abs_diff_same_tokens']:.2e} | {report['max_abs_diff_other']:.2e} |"
        )
    for lang, report in reports.items():
        for example in report["examples"]:
            print(lang, json.dumps(example, ensure_ascii=False))


if __name__ == "__main__":
    main()
