"""Stage 6a: steering interventions: move language neurons towards target values, and prove it.

An :class:`Intervention` is a neuron mask ``[layer, d_mlp]``, a target value per neuron and a
strength ``alpha``. At every written position of ``blocks.{layer}.mlp.hook_post`` each masked
activation ``a`` becomes ``a + alpha * (target - a)``: ``alpha=1`` sets it to the target,
``alpha=0.5`` goes half way, ``alpha=2`` overshoots (pushes twice as far), ``alpha=0`` is a
no-op. :func:`language_intervention` builds one from a finished run's statistics and selected
neurons, for a source language (whose neurons are deactivated: set to 0, or to their mean on the
other languages) and a target language (whose neurons are set to their mean, maximum or a high
quantile on target-language text).

The hooks are the ablation hooks' design (:mod:`mlinguality.ablation.hooks`): per targeted layer a
write hook and, after it on the same hook point, a check hook; :class:`SteeringHooks` is an
:class:`~mlinguality.ablation.hooks.AblationHooks` (a ``fwd_hooks`` list with ``records`` and
``verify()``), so it works in :func:`steer` blocks, ``run_with_hooks`` and any generation loop:

>>> import torch
>>> from mlinguality import TinyModelConfig, load_model
>>> from mlinguality.ablation.hooks import mask_from_pairs
>>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
>>> mask = mask_from_pairs([(0, 3), (1, 7)], n_layers=2, d_mlp=64)
>>> intervention = Intervention(mask, torch.full((2, 64), 2.0), alpha=0.5)
>>> ids = model.tokenizer(["Au commencement"], return_tensors="pt")["input_ids"]
>>> with steer(model, intervention) as hooks:   # every forward pass in the block
...     logits = model(ids)
>>> hooks.records[1].n_written == ids.shape[1]   # one neuron in layer 1, every position
True

Positions: ``positions="all"`` writes every position of every forward pass. ``"prompt"`` and
``"generated"`` need to know which columns are prompt: :func:`mlinguality.steering.generation.generate`
opens a :class:`SteeringWindow` for each batch (the prompt's real tokens except BOS are
"prompt", every generated token is "generated"; pads and BOS are never written); in your own
loop call ``hooks.window.begin(prompt_mask, cached=...)`` yourself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.ablation.hooks import AblationError, AblationHooks, LayerRecord, device_targets
from mlinguality.activations.stats import ActivationStats
from mlinguality.choices import Activate, Deactivate, SteeringPositions, choices
from mlinguality.types import (
    HOOK_POST,
    HookPoint,
    LayerNeuron,
    MlpActs,
    NeuronMask,
    PositionMask,
    ResidActs,
)

logger = logging.getLogger(__name__)

POSITIONS = choices(SteeringPositions)
DEACTIVATE = choices(Deactivate)
ACTIVATE = choices(Activate)
CLOCK_HOOK = "hook_embed"  # fires once per forward pass, before any block: the window's clock


class SteeringError(AblationError):
    """A steering intervention was malformed or did not take effect."""


@dataclass
class Intervention:
    """Neurons to move, where to move them, and how far.

    Attributes:
        mask: True at the neurons to steer, ``[layer, d_mlp]``.
        target: Target value of each neuron (only masked entries are used).
        alpha: Strength: ``a -> a + alpha * (target - a)`` (1 sets the target exactly).
        label: A name for tables (e.g. ``"en->fr both"``).
        n_source: Neurons deactivated (source language), for the records.
        n_target: Neurons activated (target language).
    """

    mask: NeuronMask
    target: LayerNeuron
    alpha: float = 1.0
    label: str = ""
    n_source: int = 0
    n_target: int = 0

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.ndim != 2:
            raise SteeringError(
                f"intervention mask must be bool [layer, d_mlp], got {self.mask.dtype}"
            )
        if tuple(self.target.shape) != tuple(self.mask.shape):
            raise SteeringError(
                f"intervention target has shape {tuple(self.target.shape)}, the mask {tuple(self.mask.shape)}"
            )
        if not torch.isfinite(self.target[self.mask]).all():
            raise SteeringError(
                f"intervention {self.label!r}: non-finite targets at masked neurons"
            )

    @property
    def n_neurons(self) -> int:
        return int(self.mask.sum())

    def with_alpha(self, alpha: float) -> Intervention:
        """The same neurons and targets at another strength."""
        return Intervention(self.mask, self.target, alpha, self.label, self.n_source, self.n_target)


def deactivation_values(
    stats: Mapping[str, ActivationStats], lang: str, mode: str = "zero"
) -> LayerNeuron:
    """Where ``lang``'s neurons go when deactivated: ``"zero"``, or ``"mean"``: the unweighted
    mean of the *other* languages' per-language means (what the neuron does when ``lang`` is absent).
    """
    if mode not in DEACTIVATE:
        raise SteeringError(f"deactivate: {mode!r} is not one of {', '.join(DEACTIVATE)}")
    shape = next(iter(stats.values())).sum.shape
    if mode == "zero":
        return torch.zeros(shape, dtype=torch.float32)
    others = [s.mean for other, s in stats.items() if other != lang]
    if not others:
        raise SteeringError(f"deactivate='mean' for {lang}: no other language's statistics")
    return einops.reduce(torch.stack(others), "lang layer d_mlp -> layer d_mlp", "mean").float()


def activation_values(
    stats: Mapping[str, ActivationStats], lang: str, value: str = "mean", quantile: float = 0.9
) -> LayerNeuron:
    """Where ``lang``'s neurons go when activated, from its statistics on ``lang`` text.

    ``"mean"``: the mean activation per token (Tang et al. 2024); ``"max"``: the largest one seen;
    ``"quantile"``: the ``quantile`` of the per-example (per-verse) mean activations (needs
    statistics collected with ``per_example=True``; token-level quantiles are not stored).
    """
    if lang not in stats:
        raise SteeringError(f"no statistics for language {lang!r} (have {', '.join(stats)})")
    own = stats[lang]
    if value == "mean":
        return own.mean.float()
    if value == "max":
        return own.max.float()
    if value == "quantile":
        if own.example_mean is None or own.example_mean.shape[0] == 0:
            raise SteeringError(
                f"activate='quantile' for {lang}: the statistics have no per-example means "
                "(collect with per_example=True)"
            )
        if not 0.0 <= quantile <= 1.0:
            raise SteeringError(f"quantile must be in [0, 1], got {quantile}")
        return torch.quantile(own.example_mean.float(), quantile, dim=0)
    raise SteeringError(f"activate: {value!r} is not one of {', '.join(ACTIVATE)}")


def language_intervention(
    stats: Mapping[str, ActivationStats],
    masks: Mapping[str, NeuronMask],
    source: str,
    target: str,
    *,
    deactivate: str | None = "zero",
    activate: str | None = "mean",
    quantile: float = 0.9,
    alpha: float = 1.0,
) -> Intervention:
    """Steer from ``source`` to ``target``: deactivate the source's neurons and/or activate the
    target's (``None`` skips either side).

    A neuron selected for both languages (LAPE allows it) is treated as a target neuron: it is
    activated, not deactivated.

    Args:
        stats: Per-language statistics of the selection split.
        masks: Per-language selected neurons (``selected_neurons.safetensors`` of a run).
        source: Language whose neurons are deactivated.
        target: Language whose neurons are activated.
        deactivate: ``"zero"``, ``"mean"`` (mean over the other languages) or ``None``.
        activate: ``"mean"``, ``"max"``, ``"quantile"`` or ``None``.
        quantile: The quantile for ``activate="quantile"``.
        alpha: Strength (see :class:`Intervention`).
    """
    if deactivate is None and activate is None:
        raise SteeringError("an intervention needs deactivate= or activate= (or both)")
    for lang in (source, target):
        if lang not in masks:
            raise SteeringError(
                f"no selected neurons for language {lang!r} (have {', '.join(masks)})"
            )
    shape = masks[source].shape
    mask = torch.zeros(shape, dtype=torch.bool)
    values = torch.zeros(shape, dtype=torch.float32)
    n_source = n_target = 0
    if deactivate is not None:
        chosen = masks[source] & ~masks[target] if activate is not None else masks[source]
        values[chosen] = deactivation_values(stats, source, deactivate)[chosen]
        mask |= chosen
        n_source = int(chosen.sum())
    if activate is not None:
        chosen = masks[target]
        values[chosen] = activation_values(stats, target, activate, quantile)[chosen]
        mask |= chosen
        n_target = int(chosen.sum())
    if not mask.any():
        raise SteeringError(f"{source}->{target}: the selected neuron sets are empty")
    label = f"{source}->{target} " + "+".join(
        part
        for part in (
            f"off:{deactivate}" if deactivate else "",
            f"on:{activate}" if activate else "",
        )
        if part
    )
    return Intervention(mask, values, alpha, label, n_source, n_target)


@dataclass
class SteeringWindow:
    """Which columns of the running sequence are prompt and which are generated.

    Outside :meth:`begin` / :meth:`end` every position counts (only ``positions="all"`` works).
    Inside, the clock hook (on ``hook_embed``, once per forward pass) tracks the absolute column
    of each forward pass's first position: with a KV cache, each pass continues where the last
    one stopped; without, each pass starts again at column 0.

    Attributes:
        prompt_mask: ``[batch, prompt_pos]``: prompt columns that may be written (real tokens
            except BOS); every column after the prompt is a generated token.
        cached: Whether forward passes continue a KV cache.
    """

    prompt_mask: PositionMask | None = None
    cached: bool = False
    _seen: int = 0
    _start: int = 0

    @property
    def active(self) -> bool:
        return self.prompt_mask is not None

    def begin(self, prompt_mask: PositionMask, cached: bool) -> None:
        """Start a generation whose (padded) prompt has ``prompt_mask.shape[1]`` columns."""
        self.prompt_mask, self.cached, self._seen, self._start = prompt_mask.bool(), cached, 0, 0

    def end(self) -> None:
        self.prompt_mask = None

    def tick(self, n_pos: int) -> None:
        """Called by the clock hook at the start of every forward pass."""
        if not self.active:
            return
        self._start = self._seen if self.cached else 0
        self._seen = self._start + n_pos

    def columns(self, positions: str, shape: tuple[int, int], device) -> PositionMask:
        """The positions of the current forward pass to write, ``[batch, pos]``."""
        batch, n_pos = shape
        if not self.active:
            if positions != "all":
                raise SteeringError(
                    f"positions={positions!r} needs a steering window (generate() opens one; "
                    "in your own loop call hooks.window.begin(prompt_mask, cached))"
                )
            return torch.ones(shape, dtype=torch.bool, device=device)
        prompt = self.prompt_mask.to(device)
        if batch != prompt.shape[0]:
            raise SteeringError(
                f"steering window: batch {batch}, the prompt mask {prompt.shape[0]}"
            )
        n_prompt = prompt.shape[1]
        column = torch.arange(self._start, self._start + n_pos, device=device)
        in_prompt = prompt[:, column.clamp(max=n_prompt - 1)] & (column < n_prompt)
        generated = (column >= n_prompt).expand(batch, n_pos)
        if positions == "prompt":
            return in_prompt
        if positions == "generated":
            return generated
        return in_prompt | generated


class SteeringHooks(AblationHooks):
    """An :class:`~mlinguality.ablation.hooks.AblationHooks` (``fwd_hooks`` list with records and
    ``verify()``) that also carries its intervention, its ``positions`` and its window."""

    def __init__(self, hooks, records, intervention: Intervention, positions: str, window) -> None:
        super().__init__(hooks, records, intervention.mask, intervention.target, "steer")
        self.intervention = intervention
        self.positions = positions
        self.window: SteeringWindow = window

    def verify(self) -> None:
        """Raise :class:`SteeringError` unless every targeted layer's hook fired and every
        written activation reached ``W_out`` as written."""
        try:
            super().verify()
        except AblationError as error:
            raise SteeringError(str(error).replace("ablation", "steering", 1)) from None


def steering_hooks(
    model,
    intervention: Intervention,
    positions: str = "all",
    *,
    hook_template: str = HOOK_POST,
) -> SteeringHooks:
    """The ``fwd_hooks`` that apply ``intervention`` (with a clock hook for the window first).

    Raises:
        SteeringError: a mask of the wrong shape or empty, an unknown hook point or position option.
    """
    if positions not in POSITIONS:
        raise SteeringError(f"positions: {positions!r} is not one of {', '.join(POSITIONS)}")
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    mask = intervention.mask.detach().cpu()
    if tuple(mask.shape) != (n_layers, d_mlp):
        raise SteeringError(
            f"intervention mask {tuple(mask.shape)} does not fit this model ({n_layers}, {d_mlp})"
        )
    if not mask.any():
        raise SteeringError("empty intervention: the mask selects no neuron")
    window = SteeringWindow()
    hooks: list[tuple[str, Callable]] = []
    if CLOCK_HOOK in model.hook_dict:

        def clock(embed: ResidActs, *, hook: HookPoint) -> None:
            window.tick(embed.shape[1])

        hooks.append((CLOCK_HOOK, clock))
    elif positions != "all":
        raise SteeringError(f"positions={positions!r} needs a {CLOCK_HOOK!r} hook point")
    records: dict[int, LayerRecord] = {}
    target = intervention.target.detach().float().cpu()
    for layer in mask.any(dim=1).nonzero().flatten().tolist():
        name = hook_template.format(layer=layer)
        if name not in model.hook_dict:
            raise SteeringError(f"model has no hook point {name!r} (from {hook_template!r})")
        neurons = mask[layer].nonzero().flatten()
        record = LayerRecord(layer, name, len(neurons))
        records[layer] = record
        hooks += _layer_hooks(
            record, neurons, target[layer, neurons], intervention.alpha, positions, window, d_mlp
        )
    return SteeringHooks(hooks, records, intervention, positions, window)


def _layer_hooks(
    record: LayerRecord,
    neurons: Int[Tensor, " neuron"],
    target: Float[Tensor, " neuron"],
    alpha: float,
    positions: str,
    window: SteeringWindow,
    d_mlp: int,
) -> list[tuple[str, Callable]]:
    """The write and check hooks of one layer."""
    on_device = device_targets(neurons, target)
    expected: list[Tensor] = []

    def write(act: MlpActs, *, hook: HookPoint) -> MlpActs:
        if act.shape[-1] != d_mlp:
            raise SteeringError(
                f"steering hook {record.hook_name}: activation has {act.shape[-1]} units, not {d_mlp}"
            )
        index, value = on_device(act)
        where = window.columns(positions, tuple(act.shape[:2]), act.device)[..., None]
        before = act.index_select(-1, index)
        after = torch.where(where, before + alpha * (value - before), before)
        record._changed.append((after != before).sum())
        if act.requires_grad:
            act = act.clone()
        act[..., index] = after
        expected[:] = [after]
        record.calls += 1
        record.n_written += int(where.sum()) * len(neurons)
        return act

    def check(act: MlpActs, *, hook: HookPoint) -> None:
        index, _ = on_device(act)
        record._wrong.append((act.index_select(-1, index) != expected[0]).sum())

    return [(record.hook_name, write), (record.hook_name, check)]


@contextmanager
def steer(
    model,
    intervention: Intervention,
    positions: str = "all",
    *,
    hook_template: str = HOOK_POST,
    verify: bool = True,
) -> Iterator[SteeringHooks]:
    """Apply ``intervention`` in every forward pass inside the block; hooks removed after.

    On leaving the block normally, ``hooks.verify()`` runs (unless ``verify=False``) and raises
    when a targeted layer never fired or a written value did not reach ``W_out``.
    """
    hooks = steering_hooks(model, intervention, positions, hook_template=hook_template)
    with model.hooks(fwd_hooks=list(hooks)):
        yield hooks
    if verify:
        hooks.verify()


__all__ = [
    "ACTIVATE",
    "DEACTIVATE",
    "POSITIONS",
    "Intervention",
    "SteeringError",
    "SteeringHooks",
    "SteeringWindow",
    "activation_values",
    "deactivation_values",
    "language_intervention",
    "steer",
    "steering_hooks",
]
