"""Stage 5b: ablation hooks that set chosen MLP neurons to fixed values, and prove they did.

Random neuron sets matched to a selection (the controls) are
:mod:`mlinguality.ablation.random_sets`.

A neuron set is a boolean mask ``[layer, d_mlp]`` (:data:`mlinguality.types.NeuronMask`: what
``mlinguality.selectivity.selection.select_language_neurons`` returns per language; build one from
``(layer, neuron)`` pairs with :func:`mask_from_pairs`). Each targeted neuron is overwritten at
every position of ``blocks.{layer}.mlp.hook_post`` (for gated MLPs ``act(gate) * up``, the
coefficient of ``W_out[neuron]``) with:

- ``mode="zero"``: 0 (the seed design);
- ``mode="mean"``: its mean activation over all languages (:func:`mean_activation`: the
  unweighted mean of the per-language means, so a language that tokenizes into more pieces
  does not weigh more);
- ``mode="values"``: explicit values ``[layer, d_mlp]`` (or one float).

Two ways in, both checked:

>>> from mlinguality import TinyModelConfig, load_model
>>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
>>> mask = mask_from_pairs([(0, 3), (1, 7)], n_layers=2, d_mlp=64)
>>> ids = model.tokenizer(["Blessed are the peacemakers"], return_tensors="pt")["input_ids"]
>>> with ablate(model, mask, mode="zero") as hooks:   # hooks on for the block, then removed
...     logits = model(ids)
>>> hooks.records[1].calls
1
>>> hooks = ablation_hooks(model, mask, mode="zero")  # a fwd_hooks list for run_with_hooks
>>> logits = model.run_with_hooks(ids, fwd_hooks=hooks)
>>> hooks.verify()  # raises MlingualityError if a targeted layer's hook never fired

Which positions are written (``positions``): ``"all"`` (every position, the seed design) or
``"skip_first"`` (every position but the first of the sequence: the BOS, the attention sink,
which collection excludes by default, so the ablation touches what selection counted). With
``"skip_first"``, pass right-padded or unpadded inputs (column 0 is then each text's first
token), and note that a cached generation step (one new token per forward) is column 0 too.

Every targeted layer gets two hooks on its hook point: one writes the values, the next checks
them. Inside :func:`ablate` (or :meth:`AblationHooks.checking`) a second check reads what
actually enters ``W_out``: a torch pre-hook on the output projection (``blocks.L.mlp.out``'s
wrapped linear), so a later hook that changes the values again, or a bridge that drops the
hook's result, is caught too.
:meth:`AblationHooks.verify` (run at the end of every :func:`ablate` block) raises
:class:`AblationError` when a targeted layer's hook never fired or a written value did not
arrive; ``records`` also say how many activations actually changed (0 means they were already at
the target, e.g. a mean ablation on a 1-token input whose activation is the mean).

On a TransformerBridge the hook is registered under the alias ``blocks.L.mlp.hook_post``;
inside the hook ``hook.name`` reads the canonical ``blocks.L.mlp.out.hook_in`` (same hook point).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.choices import AblationPositions, AblationWrite, choices
from mlinguality.errors import MlingualityError
from mlinguality.types import HOOK_POST, HookPoint, LayerNeuron, MlpActs, NeuronMask

logger = logging.getLogger(__name__)

AblationMode = AblationWrite  # the hooks also write values the caller gives
ABLATION_POSITIONS = choices(AblationPositions)


class AblationError(MlingualityError):
    """An ablation was malformed (empty set, unknown hook, bad shape) or did not take effect."""


@dataclass
class LayerRecord:
    """What one targeted layer's hooks saw, summed over forward passes.

    Attributes:
        layer: Layer index.
        hook_name: The hook point name the hooks were registered under.
        n_neurons: Targeted neurons in this layer.
        calls: Forward passes in which the write hook fired.
        n_written: Activations written (positions x targeted neurons, over all calls).
        n_changed: Of those, how many differed from the target before the write.
        n_wrong: Activations that did not equal the target after the write (must be 0).
    """

    layer: int
    hook_name: str
    n_neurons: int
    calls: int = 0
    n_written: int = 0
    # Tensors accumulate on the activation's device so hooks never force a device sync.
    _changed: list[Tensor] = field(default_factory=list, repr=False)
    _wrong: list[Tensor] = field(default_factory=list, repr=False)

    @property
    def n_changed(self) -> int:
        return int(sum(int(t) for t in self._changed))

    @property
    def n_wrong(self) -> int:
        return int(sum(int(t) for t in self._wrong))


class AblationHooks(list):
    """A ``fwd_hooks`` list (``[(hook_name, fn), ...]``) for ``run_with_hooks`` or ``model.hooks``,
    with the records of what its hooks did and :meth:`verify`.

    Built by :func:`ablation_hooks`; pass it wherever TransformerLens takes ``fwd_hooks``.
    """

    def __init__(
        self,
        hooks: list[tuple[str, Callable]],
        records: dict[int, LayerRecord],
        mask: NeuronMask,
        values: LayerNeuron,
        mode: str,
        handles_factory: Callable[[], list] | None = None,
        positions: str = "all",
    ) -> None:
        super().__init__(hooks)
        self.records = records
        self.mask = mask
        self.values = values
        self.mode = mode
        self.positions = positions
        self._handles_factory = handles_factory
        self._handles: list = []

    @contextmanager
    def checking(self) -> Iterator[AblationHooks]:
        """Attach the checks on ``W_out``'s input for the block (``ablate`` does this; use it
        around ``run_with_hooks(fwd_hooks=hooks)`` to verify what reached ``W_out``)."""
        handles = self._handles_factory() if self._handles_factory else []
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    @property
    def n_neurons(self) -> int:
        return int(self.mask.sum())

    def reset(self) -> None:
        """Forget what the hooks saw (to verify the next forward pass on its own)."""
        for record in self.records.values():
            record.calls = record.n_written = 0
            record._changed.clear()
            record._wrong.clear()

    def verify(self) -> None:
        """Raise :class:`AblationError` unless every targeted layer's hook fired and every
        written activation reached the model at its target value."""
        silent = [r.hook_name for r in self.records.values() if r.calls == 0]
        if silent:
            raise AblationError(
                f"ablation hook never fired on {', '.join(silent)} "
                "(no forward pass, or it stopped before that layer)"
            )
        for record in self.records.values():
            if record.n_wrong:
                raise AblationError(
                    f"ablation on {record.hook_name}: {record.n_wrong} of {record.n_written} "
                    "targeted activations were not at their target value after the write"
                )
        logger.debug(
            "ablation verified: %s",
            ", ".join(
                f"L{r.layer}: {r.n_neurons} neurons, {r.calls} calls, {r.n_changed}/{r.n_written} changed"
                for r in self.records.values()
            ),
        )


def mask_from_pairs(pairs: Iterable[tuple[int, int]], n_layers: int, d_mlp: int) -> NeuronMask:
    """A ``[layer, d_mlp]`` mask with True at each ``(layer, neuron)`` pair.

    >>> mask_from_pairs([(0, 1), (1, 0)], n_layers=2, d_mlp=3).int().tolist()
    [[0, 1, 0], [1, 0, 0]]
    """
    mask = torch.zeros((n_layers, d_mlp), dtype=torch.bool)
    for layer, neuron in pairs:
        if not (0 <= layer < n_layers and 0 <= neuron < d_mlp):
            raise AblationError(
                f"neuron ({layer}, {neuron}) is outside {n_layers} layers x d_mlp={d_mlp}"
            )
        mask[layer, neuron] = True
    return mask


def mean_activation(
    stats: Mapping[str, ActivationStats], weighting: Literal["language", "token"] = "language"
) -> LayerNeuron:
    """Mean ``hook_post`` activation over all languages, the target of ``mode="mean"``.

    Args:
        stats: Per-language statistics (from collection).
        weighting: ``"language"`` (default): the unweighted mean of the per-language means, so
            every language counts once whatever its token count (tokenizers split scripts very
            differently). ``"token"``: pooled over all counted tokens.
    """
    if not stats:
        raise AblationError("mean_activation: no language statistics given")
    if weighting == "language":
        means = torch.stack([s.mean for s in stats.values()])
        return einops.reduce(means, "lang layer d_mlp -> layer d_mlp", "mean").float()
    if weighting == "token":
        total = torch.stack([s.sum for s in stats.values()]).sum(0)
        n_tokens = sum(s.n_tokens for s in stats.values())
        return (total / max(n_tokens, 1)).float()
    raise AblationError(f"mean_activation: weighting {weighting!r} is not 'language' or 'token'")


def _target_values(
    mask: NeuronMask,
    mode: str,
    mean: LayerNeuron | None,
    values: LayerNeuron | float | None,
) -> LayerNeuron:
    if mode == "zero":
        if mean is not None or values is not None:
            raise AblationError("mode='zero' takes neither mean nor values")
        return torch.zeros(mask.shape, dtype=torch.float32)
    if mode == "mean":
        if mean is None:
            raise AblationError("mode='mean' needs mean= (e.g. mean_activation(stats))")
        source = mean
    elif mode == "values":
        if values is None:
            raise AblationError("mode='values' needs values=")
        source = values
    else:
        raise AblationError(f"ablation mode {mode!r} is not 'zero', 'mean' or 'values'")
    if isinstance(source, int | float):
        return torch.full(mask.shape, float(source), dtype=torch.float32)
    if tuple(source.shape) != tuple(mask.shape):
        raise AblationError(
            f"{mode} values have shape {tuple(source.shape)}, the mask {tuple(mask.shape)}"
        )
    return source.detach().float().cpu()


def ablation_hooks(
    model,
    mask: NeuronMask,
    mode: AblationMode = "zero",
    *,
    mean: LayerNeuron | None = None,
    values: LayerNeuron | float | None = None,
    hook_template: str = HOOK_POST,
    positions: str = "all",
) -> AblationHooks:
    """The ``fwd_hooks`` that set the neurons of ``mask`` to their targets, with their records.

    Pass the result to ``model.run_with_hooks(..., fwd_hooks=hooks)``, or use :func:`ablate` to
    keep the hooks on for a block of code.

    Args:
        model: A TransformerLens ``TransformerBridge`` (what :func:`mlinguality.load_model`
            returns, or one you built with ``TransformerBridge.boot_transformers``) whose
            ``hook_dict`` has the ``hook_template`` hook points.
        mask: True at the neurons to ablate, ``[n_layers, d_mlp]``.
        mode: ``"zero"``, ``"mean"`` (needs ``mean``) or ``"values"`` (needs ``values``).
        mean: Per-neuron mean activation over all languages (:func:`mean_activation`).
        values: Explicit targets (only the masked entries are used), or one float for all.
        hook_template: Hook point name with ``{layer}``; the default is the MLP hidden activation.
        positions: ``"all"`` or ``"skip_first"`` (module docstring).

    The checks on ``W_out``'s input are attached by :meth:`AblationHooks.checking` (which
    :func:`ablate` enters); without it, the hook list checks on the hook point itself.

    Raises:
        AblationError: empty mask, wrong mask shape, unknown hook name or bad mode arguments.

    >>> from mlinguality import TinyModelConfig, load_model
    >>> model = load_model(TinyModelConfig(n_layers=2, d_mlp=64))
    >>> hooks = ablation_hooks(model, mask_from_pairs([(1, 5)], n_layers=2, d_mlp=64))
    >>> [name for name, _ in hooks]  # a writing hook, then a checking hook
    ['blocks.1.mlp.hook_post', 'blocks.1.mlp.hook_post']
    """
    if positions not in ABLATION_POSITIONS:
        raise AblationError(f"positions {positions!r} is not one of {ABLATION_POSITIONS}")
    start = 1 if positions == "skip_first" else 0
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    if mask.dtype != torch.bool or tuple(mask.shape) != (n_layers, d_mlp):
        raise AblationError(
            f"neuron mask must be bool [{n_layers}, {d_mlp}] for this model, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    mask = mask.detach().cpu()
    if not mask.any():
        raise AblationError("empty neuron set: the mask selects no neuron to ablate")
    targets = _target_values(mask, mode, mean, values)
    if not torch.isfinite(targets[mask]).all():
        raise AblationError(f"{mode} ablation: non-finite target values at masked neurons")

    hooks: list[tuple[str, Callable]] = []
    records: dict[int, LayerRecord] = {}
    checks: list[tuple[torch.nn.Module, Callable]] = []
    for layer in mask.any(dim=1).nonzero().flatten().tolist():
        name = hook_template.format(layer=layer)
        if name not in model.hook_dict:
            raise AblationError(f"model has no hook point {name!r} (from {hook_template!r})")
        neurons = mask[layer].nonzero().flatten()
        record = LayerRecord(layer, name, len(neurons))
        records[layer] = record
        write, check = _layer_hooks(record, neurons, targets[layer, neurons], d_mlp, start)
        hooks += [(name, write), (name, check)]
        w_out = _w_out_input_module(model, name)
        if w_out is not None:
            checks.append((w_out, check))

    def attach() -> list:
        return [
            module.register_forward_pre_hook(lambda _m, args, check=check: check(args[0]))
            for module, check in checks
        ]

    return AblationHooks(hooks, records, mask, targets, mode, attach, positions)


def _w_out_input_module(model, hook_name: str):
    """The module whose input is the hook point's value on its way into ``W_out`` (the wrapped
    linear of ``blocks.L.mlp.out`` on a TransformerBridge), or None when there is none.

    None too where the hook shows the value in another layout than the module receives (a
    ``hook_conversion``: OPT's MLP runs on ``[batch*pos, d_mlp]``, its hooks show
    ``[batch, pos, d_mlp]``); the hook-level check then stands alone.
    """
    point = model.hook_dict[hook_name]
    if getattr(point, "hook_conversion", None) is not None:
        return None
    canonical = getattr(point, "name", None) or hook_name
    parent, _, leaf = canonical.rpartition(".")
    if leaf != "hook_in" or not parent:
        return None
    try:
        module = model.get_submodule(parent)
    except AttributeError:
        return None
    inner = getattr(module, "original_component", None)
    return inner if isinstance(inner, torch.nn.Module) else None


_NeuronTargets = tuple[Int[Tensor, " neuron"], Float[Tensor, " neuron"]]


def device_targets(
    neurons: Int[Tensor, " neuron"], target: Float[Tensor, " neuron"]
) -> Callable[[MlpActs], _NeuronTargets]:
    """``act -> (neurons, target)`` on ``act``'s device and dtype, moved once per device/dtype.

    Shared by the ablation and steering hooks, so that a hook copies its indices and values to
    the device on the first call only.
    """
    cache: dict[tuple, _NeuronTargets] = {}

    def on_device(act: MlpActs) -> _NeuronTargets:
        key = (act.device, act.dtype)
        if key not in cache:
            cache[key] = (neurons.to(act.device), target.to(act.device, act.dtype))
        return cache[key]

    return on_device


def _layer_hooks(
    record: LayerRecord,
    neurons: Int[Tensor, " neuron"],
    target: Float[Tensor, " neuron"],
    d_mlp: int,
    start: int = 0,
) -> tuple[Callable, Callable]:
    """The write hook and the check of one layer (closures over device-cached targets).

    ``start`` is the first sequence position written (1 for ``positions="skip_first"``). The
    check also runs as a torch pre-hook on ``W_out`` (:meth:`AblationHooks.checking`), without
    a hook point.
    """
    on_device = device_targets(neurons, target)

    def write(act: MlpActs, *, hook: HookPoint) -> MlpActs:
        if act.shape[-1] != d_mlp:
            raise AblationError(
                f"ablation hook {record.hook_name}: activation has {act.shape[-1]} units, "
                f"the mask {d_mlp}"
            )
        index, value = on_device(act)
        before = act[..., start:, :].index_select(-1, index)
        record._changed.append((before != value).sum())
        if act.requires_grad:
            act = act.clone()
        act[..., start:, index] = value
        record.calls += 1
        record.n_written += before.numel()
        return act

    def check(act: MlpActs, *, hook: HookPoint | None = None) -> None:
        index, value = on_device(act)
        record._wrong.append((act[..., start:, :].index_select(-1, index) != value).sum())

    return write, check


@contextmanager
def ablate(
    model,
    mask: NeuronMask,
    mode: AblationMode = "zero",
    *,
    mean: LayerNeuron | None = None,
    values: LayerNeuron | float | None = None,
    hook_template: str = HOOK_POST,
    verify: bool = True,
    positions: str = "all",
) -> Iterator[AblationHooks]:
    """Ablate ``mask``'s neurons in every forward pass inside the block; hooks removed after.

    Arguments as :func:`ablation_hooks`. On leaving the block normally, :meth:`AblationHooks.verify`
    runs (unless ``verify=False``): a block that never ran the model through every targeted layer
    raises :class:`AblationError`. Hooks are removed even when the block raises.
    """
    hooks = ablation_hooks(
        model,
        mask,
        mode,
        mean=mean,
        values=values,
        hook_template=hook_template,
        positions=positions,
    )
    with model.hooks(fwd_hooks=list(hooks)), hooks.checking():
        yield hooks
    if verify:
        hooks.verify()
