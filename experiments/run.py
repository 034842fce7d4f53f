"""The program a W&B sweep runs: ``python experiments/run.py CONFIG --section.key=value ...``.

``wandb agent`` calls it with the sweep's parameters as ``--selectivity.top_rate=0.02`` style
arguments; it is ``mlinguality run`` under another name (all logic lives in the library).
"""

import sys

from mlinguality.cli.main import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
