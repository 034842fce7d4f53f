"""Top stage: configured runs (config, pipeline stages, runner, report, W&B tracking, sweeps, CLI).

Heavy modules (torch, the model) are imported by the stages when a run starts, not here.
"""

from mlinguality.run.config import RunConfig
from mlinguality.run.runner import run_experiment

__all__ = ["RunConfig", "run_experiment"]
