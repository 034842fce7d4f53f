"""Stage 6f: steering with a language direction: add ``alpha * direction`` to the residual stream.

A :class:`DirectionIntervention` is a layer ``L``, a direction ``d`` (``[d_model]``, e.g. from
:func:`mlinguality.steering.directions.language_direction`) and a strength ``alpha``. At every
written position of ``blocks.{L}.hook_resid_post`` the residual ``r`` becomes
``r + alpha * d``. **alpha scales the raw difference-of-means vector**: with
``d = mean_target - mean_source``, ``alpha=1`` moves the source mean exactly onto the target
mean, ``alpha=2`` twice as far, ``alpha=0`` is a checked no-op. (For neuron steering ``alpha=1``
likewise means "arrive at the target": :mod:`mlinguality.steering.interventions`.)

Positions are neuron steering's, through the same :class:`~mlinguality.steering.interventions.SteeringWindow`
and clock hook: ``"all"`` writes every position of a forward pass outside a generation window,
and inside :func:`mlinguality.steering.generation.generate`'s window every real prompt token
except BOS plus every generated token (``"prompt"`` and ``"generated"`` one side only); pads and
BOS are never written, with or without the KV cache (a cached step writes its one new column).

:class:`DirectionHooks` is a ``fwd_hooks`` list (a clock hook, the write hook and, after it on the
same hook point, a check hook) with a record and :meth:`DirectionHooks.verify`, so it works in
:func:`steer_direction` blocks, ``run_with_hooks`` and :func:`~mlinguality.steering.generation.generate`:

>>> import torch
>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig(n_layers=2, d_model=32))
>>> ids = model.tokenizer(["Au commencement"], return_tensors="pt")["input_ids"]
>>> with steer_direction(model, DirectionIntervention(1, torch.ones(32), alpha=0.5)) as hooks:
...     logits = model(ids)
>>> hooks.record.n_written == ids.shape[1]   # outside a window "all" is every position
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mlinguality.steering.interventions import (
    CLOCK_HOOK,
    POSITIONS,
    SteeringError,
    SteeringWindow,
)
from mlinguality.types import HOOK_RESID_POST, HookPoint, ResidActs, ResidVector

logger = logging.getLogger(__name__)


@dataclass
class DirectionIntervention:
    """A direction added to the residual stream after one block.

    Attributes:
        layer: The block whose output (``hook_resid_post``) is written.
        direction: ``[d_model]``; only its product with ``alpha`` is added.
        alpha: Strength: ``r -> r + alpha * direction`` at each written position.
        label: A name for tables (e.g. ``"en->fr direction L6"``).
    """

    layer: int
    direction: ResidVector
    alpha: float = 1.0
    label: str = ""

    def __post_init__(self) -> None:
        if self.direction.ndim != 1:
            raise SteeringError(f"direction must be [d_model], got {tuple(self.direction.shape)}")
        if not torch.isfinite(self.direction).all():
            raise SteeringError(f"direction {self.label!r} has non-finite entries")

    @property
    def norm(self) -> float:
        """The direction's Euclidean norm (``alpha * norm`` is the size of the push)."""
        return float(self.direction.double().norm())

    def with_alpha(self, alpha: float) -> DirectionIntervention:
        """The same layer and direction at another strength."""
        return DirectionIntervention(self.layer, self.direction, alpha, self.label)


@dataclass
class DirectionRecord:
    """What the write and check hooks saw, summed over forward passes.

    Attributes:
        layer: The written layer.
        hook_name: The hook point written.
        calls: Forward passes in which the write hook fired.
        n_written: Positions written (over all calls).
        n_wrong: Residual entries the next hook did not see as written (must be 0).
    """

    layer: int
    hook_name: str
    calls: int = 0
    n_written: int = 0
    _wrong: list[Tensor] = field(default_factory=list, repr=False)

    @property
    def n_wrong(self) -> int:
        return int(sum(int(t) for t in self._wrong))


class DirectionHooks(list):
    """A ``fwd_hooks`` list that adds a direction, with its :attr:`record`, its ``positions``,
    its :attr:`window` (opened by ``generate``) and :meth:`verify`."""

    def __init__(
        self,
        hooks: list[tuple[str, Callable]],
        record: DirectionRecord,
        intervention: DirectionIntervention,
        positions: str,
        window: SteeringWindow,
    ) -> None:
        super().__init__(hooks)
        self.record = record
        self.records = {record.layer: record}
        self.intervention = intervention
        self.positions = positions
        self.window = window

    def verify(self) -> None:
        """Raise :class:`SteeringError` unless the write hook fired and the next hook on the same
        point saw exactly the written residual."""
        if self.record.calls == 0:
            raise SteeringError(
                f"direction hook never fired on {self.record.hook_name} "
                "(no forward pass, or it stopped before that layer)"
            )
        if self.record.n_wrong:
            raise SteeringError(
                f"direction on {self.record.hook_name}: {self.record.n_wrong} residual entries "
                "differ from what was written (another hook overwrote them)"
            )


def direction_hooks(
    model,
    intervention: DirectionIntervention,
    positions: str = "all",
    *,
    hook_template: str = HOOK_RESID_POST,
) -> DirectionHooks:
    """The ``fwd_hooks`` that apply ``intervention`` (a clock hook for the window first).

    Raises:
        SteeringError: a direction of the wrong size, a layer or hook point the model lacks, an
            unknown position option.
    """
    if positions not in POSITIONS:
        raise SteeringError(f"positions: {positions!r} is not one of {', '.join(POSITIONS)}")
    d_model, n_layers = model.cfg.d_model, model.cfg.n_layers
    if intervention.direction.shape[0] != d_model:
        raise SteeringError(
            f"direction has {intervention.direction.shape[0]} entries, the model's d_model {d_model}"
        )
    if not 0 <= intervention.layer < n_layers:
        raise SteeringError(f"layer {intervention.layer} is out of range ({n_layers} layers)")
    name = hook_template.format(layer=intervention.layer)
    if name not in model.hook_dict:
        raise SteeringError(f"model has no hook point {name!r} (from {hook_template!r})")
    window = SteeringWindow()
    hooks: list[tuple[str, Callable]] = []
    if CLOCK_HOOK in model.hook_dict:

        def clock(embed: ResidActs, *, hook: HookPoint) -> None:
            window.tick(embed.shape[1])

        hooks.append((CLOCK_HOOK, clock))
    elif positions != "all":
        raise SteeringError(f"positions={positions!r} needs a {CLOCK_HOOK!r} hook point")
    record = DirectionRecord(intervention.layer, name)
    hooks += _write_and_check(record, intervention, positions, window)
    return DirectionHooks(hooks, record, intervention, positions, window)


def _write_and_check(
    record: DirectionRecord,
    intervention: DirectionIntervention,
    positions: str,
    window: SteeringWindow,
) -> list[tuple[str, Callable]]:
    """The write hook and the check hook after it."""
    base = intervention.direction.detach().float().cpu() * float(intervention.alpha)
    on_device: dict[tuple, Tensor] = {}
    expected: list[Tensor] = []

    def shift_for(resid: Tensor) -> Tensor:
        key = (resid.device, resid.dtype)
        if key not in on_device:
            on_device[key] = base.to(device=resid.device, dtype=resid.dtype)
        return on_device[key]

    def write(resid: ResidActs, *, hook: HookPoint) -> ResidActs:
        where = window.columns(positions, tuple(resid.shape[:2]), resid.device)
        out = torch.where(where[..., None], resid + shift_for(resid), resid)
        expected[:] = [out]
        record.calls += 1
        record.n_written += int(where.sum())
        return out

    def check(resid: ResidActs, *, hook: HookPoint) -> None:
        record._wrong.append((resid != expected[0]).sum())

    return [(record.hook_name, write), (record.hook_name, check)]


@contextmanager
def steer_direction(
    model,
    intervention: DirectionIntervention,
    positions: str = "all",
    *,
    hook_template: str = HOOK_RESID_POST,
    verify: bool = True,
) -> Iterator[DirectionHooks]:
    """Add the direction in every forward pass inside the block; hooks removed after, and
    ``hooks.verify()`` run on leaving normally (unless ``verify=False``)."""
    hooks = direction_hooks(model, intervention, positions, hook_template=hook_template)
    with model.hooks(fwd_hooks=list(hooks)):
        yield hooks
    if verify:
        hooks.verify()


__all__ = [
    "DirectionHooks",
    "DirectionIntervention",
    "DirectionRecord",
    "direction_hooks",
    "steer_direction",
]
