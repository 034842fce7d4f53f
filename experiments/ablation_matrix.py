"""Which neuron selections are language-specific when ablated? Gemma 3 270M on the Bible.

    python experiments/ablation_matrix.py --langs en,fr,ru,zh,hi --select 200 --eval 12 \\
        --metrics lape,cohens_d --rates 'lape=0.01,0.05;cohens_d=0.002,0.01' \\
        --modes zero,mean --seeds 2 --out runs/ablation

Steps (all library calls): load the corpus and split it by id hash into ``select`` and ``eval``;
collect per-language statistics on ``select`` (positions ``all``); for every selection metric x
rate x ablation mode x positions, run the ablation matrix on ``eval`` (baseline shared), with
count- and activity-matched random controls. Writes ``matrix.csv`` (every cell), ``summary.md`` (one line per configuration),
``summary.json`` and ``heatmaps.png`` into ``--out``.

Kept as a script for old command lines; it is ``mlinguality ablation-matrix`` (mlinguality/run/experiments.py).
"""

import sys

from mlinguality.cli.main import main

if __name__ == "__main__":
    main(["ablation-matrix", *sys.argv[1:]])
