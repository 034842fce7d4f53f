"""The pipeline's stages, declared once: the runner, the cache, ``stages.json``, resume, torchrun,
the W&B mirror and the report iterate over :data:`STAGES`.

A stage is its name; the step that computes it (a module of :mod:`mlinguality.run.steps`);
the files it writes into the run folder; the config values its cache key covers; the earlier
stages whose keys its key covers (what it reads); the input fingerprints its key covers
(:mod:`mlinguality.run.keys`: the model's weights, the corpus file's bytes); whether it runs
for a config; whether the other ranks take part under torchrun.

Adding a stage is one module under ``run/steps/`` and one entry here (docs/contributing.md).

>>> [stage.name for stage in STAGES]
['collect', 'score', 'select', 'examples', 'lenses', 'ablate', 'steer']
>>> stage_named("select").reads
('collect',)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlinguality.run.config import RunConfig
from mlinguality.run.inputs import StageContext
from mlinguality.run.steps.ablate import ablate
from mlinguality.run.steps.collect import collect
from mlinguality.run.steps.examples import OUTPUT as NEURONS_FOLDER
from mlinguality.run.steps.examples import examples
from mlinguality.run.steps.lenses import OUTPUT as LENSES_FOLDER
from mlinguality.run.steps.lenses import lenses
from mlinguality.run.steps.score import score
from mlinguality.run.steps.select import select
from mlinguality.run.steps.steer import OUTPUT as STEERING_FOLDER
from mlinguality.run.steps.steer import steer


def _always(config: RunConfig) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of a run.

    Attributes:
        name: The stage's name (``stages.json``, the cache's ``{name}-{key}`` folders, logs).
        step: Computes the stage from a :class:`~mlinguality.run.inputs.StageContext`, writing
            exactly ``outputs`` into the run folder.
        outputs: Files and folders it writes (checksummed, cached, copied on reuse).
        settings: The config values that change its results (not device, threads or batch
            sizes: a run elsewhere reuses the stage).
        reads: Earlier stages whose outputs it reads; their keys are part of its key.
        inputs: Input fingerprints part of its key (:data:`mlinguality.run.keys.INPUTS`).
        enabled: Whether it runs for a config.
        team: Under torchrun, the other ranks take part (the last such stage releases them).
        checkpoints: It checkpoints mid-way beside the cache (one run at a time per key).
        artifact: ``(name prefix, type)`` of the W&B artifact of its outputs, named
            ``{prefix}-{key}`` (None: not logged).
        version: Part of its key: bump it when the stage's outputs change meaning, so cached
            entries of the old outputs are not reused (the whole cache: ``keys.STAGE_FORMAT``).
    """

    name: str
    step: Callable[[StageContext], None]
    outputs: tuple[str, ...]
    settings: Callable[[RunConfig], Any]
    reads: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    enabled: Callable[[RunConfig], bool] = _always
    team: bool = False
    checkpoints: bool = False
    artifact: tuple[str, str] | None = None
    version: int = 1


def _without(section: object, *names: str) -> dict[str, Any]:
    return {k: v for k, v in vars(section).items() if k not in names}


STAGES: tuple[Stage, ...] = (
    Stage(
        "collect",
        collect,
        outputs=("stats", "corpus.json"),
        settings=lambda c: {
            "dtype": c.model.dtype,
            "corpus": vars(c.corpus),
            "collection": _without(c.collection, "batch_tokens"),
            "langs": c.collection_langs,
            **({"residual": c.residual_collection} if c.lenses.enabled else {}),
        },
        inputs=("model", "corpus", "merged_stats"),
        team=True,
        checkpoints=True,
        artifact=("stats", "stats"),
        version=2,  # 2: corpus.seed salts the id-hash split (seed 0 keeps the old split)
    ),
    Stage(
        "score",
        score,
        outputs=("layer_profile.csv", "u_shape.csv"),
        settings=lambda c: {  # the control pairs as resolved (None: the Bible's, on the Bible)
            **_without(c.selectivity, "select_metric", "top_rate"),
            "control_pairs": c.control_pairs,
        },
        reads=("collect",),
    ),
    Stage(
        "select",
        select,
        outputs=(
            "selectivity.csv",
            "selected_neurons.safetensors",
            "selected_neurons.csv",
            "selected_neurons.json",
            "language_overlap.csv",
        ),
        settings=lambda c: {
            "metric": c.selectivity.select_metric,
            "top_rate": c.selectivity.top_rate,
        },
        reads=("collect",),
        artifact=("neurons", "selected-neurons"),
    ),
    Stage(
        "examples",
        examples,
        outputs=(NEURONS_FOLDER,),
        settings=lambda c: {"examples": _without(c.examples, "enabled"), "seed": c.seed},
        reads=("select",),
        inputs=("model", "corpus"),
        enabled=lambda c: c.examples.enabled,
        artifact=("neurons-cards", "neuron-cards"),
        version=2,  # 2: permutation p-values in output_language.csv
    ),
    Stage(
        "lenses",
        lenses,
        outputs=(LENSES_FOLDER,),
        settings=lambda c: {"lenses": _without(c.lenses, "enabled"), "seed": c.seed},
        reads=("collect",),
        inputs=("model",),  # the final norm and the unembedding of the logit lens
        enabled=lambda c: c.lenses.enabled,
    ),
    Stage(
        "ablate",
        ablate,
        outputs=("ablation.csv", "ablation.json"),  # the report draws ablation.png
        settings=lambda c: {"ablation": _without(c.ablation, "batch_tokens"), "seed": c.seed},
        reads=("select",),
        enabled=lambda c: c.ablation.enabled,
        team=True,
    ),
    Stage(
        "steer",
        steer,
        outputs=(STEERING_FOLDER,),
        settings=lambda c: {
            "steering": _without(c.steering, "enabled", "batch_size"),
            "corpus": vars(c.corpus),
            "seed": c.seed,
        },
        reads=("select",),
        enabled=lambda c: c.steering.enabled,
    ),
)


def stage_named(name: str) -> Stage:
    """The declaration of stage ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def enabled_stages(config: RunConfig) -> list[Stage]:
    """The stages a run of ``config`` runs, in order."""
    return [stage for stage in STAGES if stage.enabled(config)]
