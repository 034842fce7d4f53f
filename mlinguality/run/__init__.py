"""Top stage: configured runs (config, pipeline stages, runner, report, W&B tracking, sweeps, CLI).

Heavy modules (torch, the model) are imported by the stages when a run starts, not here:
``RunConfig``, ``run_experiment``, ``Run`` and ``compare`` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "mlinguality.run.config",
    "run_experiment": "mlinguality.run.runner",
    "Run": "mlinguality.run.results",
    "compare": "mlinguality.run.results",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlinguality.run' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
