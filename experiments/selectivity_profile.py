"""Per-layer language selectivity of Gemma 3 270M on Bible verses, and the U-shape test.

    MLINGUALITY_CACHE=/tmp/mlcache HF_HUB_OFFLINE=1 .venv/bin/python \\
        experiments/selectivity_profile.py --langs en,fr,de,ru,zh,hi --verses 300

Collects per-example statistics (cached in ``--out``/stats; reruns reuse them), computes the
profile with permutation p-values and bootstrap intervals, writes ``layer_profile.csv`` and
``u_shape.csv`` to ``--out``, PNG plots to ``--img``, and prints Markdown tables for
docs/results.md.

Kept as a script for old command lines; it is ``mlinguality profile`` (mlinguality/run/experiments.py).
"""

import sys

from mlinguality.cli.main import main

if __name__ == "__main__":
    main(["profile", *sys.argv[1:]])
