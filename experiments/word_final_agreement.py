"""How often does one-pass word_final equal the seed authors' per-prefix loop on Gemma?

    python experiments/word_final_agreement.py --langs en,fr,ru,zh --verses 10

Prints, per language, the words compared, the share whose prefix tokenizes exactly like the full
verse (there the two methods must agree up to float noise), the largest activation difference on
those words and on the rest, and a few mismatching prefixes.

Kept as a script for old command lines; it is ``mlinguality word-final`` (mlinguality/run/experiments.py).
"""

import sys

from mlinguality.cli.main import main

if __name__ == "__main__":
    main(["word-final", *sys.argv[1:]])
