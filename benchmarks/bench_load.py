"""Time the embedded Gemma 3 270M: first load (GGUF conversion) and cached load, with peak RSS.

    python benchmarks/bench_load.py            # uses a fresh temporary cache for the first load

Each load runs in a fresh process so peak RSS is that load's alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, time
start = time.perf_counter()
from mlinguality import load_model
model = load_model("gemma-3-270m")
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def load_once(cache: str) -> dict:
    env = dict(os.environ, MLINGUALITY_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        first = load_once(cache)
        cached = [load_once(cache) for _ in range(3)]
    print("| load | seconds (incl. imports) | peak RSS |\n|---|---|---|")
    print(
        f"| first (convert GGUF -> safetensors) | {first['seconds']:.1f} | {first['peak_rss_gb']:.2f} GB |"
    )
    for run in cached:
        print(f"| cached | {run['seconds']:.1f} | {run['peak_rss_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
