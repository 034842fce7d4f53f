"""What differs between model families, and where TransformerBridge needs help: one place.

Three facts decide how the toolkit reads a model (docs/models.md has the table per family):

- **The MLP's width** (``d_mlp``, the neurons studied): the width ``blocks.L.mlp.hook_post``
  shows, checked against the checkpoint's own config field (``intermediate_size``, ``ffn_dim``,
  ``ffn_hidden_size``, ``n_inner``; BLOOM's is fixed at 4 x ``hidden_size``).
- **Gated or plain MLP**: gated (Llama, Mistral, Qwen, Gemma, Cohere/Aya, Phi-3) have
  ``hook_pre_linear`` (the up projection); there a neuron *fires* when its gate
  (``hook_pre``) is positive, on plain MLPs (GPT-2, BLOOM, XGLM, OPT, Phi-2, Falcon) when
  ``hook_post`` is.
- **What goes in front of a text** (:class:`Leading`): the tokenizer's own setting is followed
  (Gemma, Llama, Cohere add their BOS; XGLM puts ``</s>``; OPT ``</s>`` as its BOS; Qwen and
  Falcon nothing). Where a tokenizer declares a BOS but does not add it (GPT-2, BLOOM, Phi,
  Phi-3 with ``add_bos_token: false``), the toolkit adds it, as TransformerLens does, unless the
  BOS is a chat-turn token (SmolLM2-Instruct's ``<|im_start|>``, used by its chat template) or
  not the model's own ``bos_token_id``. Whatever is in front is excluded from statistics with
  ``include_bos: false``; a real token never is.

The workarounds for TransformerBridge (transformer-lens 4.3) live here, each naming the upstream
behaviour, each with a test in ``tests/families/test_workarounds.py`` that fails once it is no
longer needed: :func:`correct_d_mlp` and :func:`bridge_keeps_tokenizer`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch

from mlinguality.types import HOOK_POST, HOOK_PRE, HOOK_PRE_LINEAR, hook_post_name

logger = logging.getLogger(__name__)

LeadingSource = Literal["tokenizer", "added", "none"]
# The checkpoint config fields that hold the MLP width, by family (first present wins).
_WIDTH_FIELDS = ("intermediate_size", "ffn_dim", "ffn_hidden_size", "n_inner", "mlp_hidden_size")
_PROBE = "a b"  # encoded with and without special tokens to see what a tokenizer adds


@dataclass(frozen=True)
class Leading:
    """What the toolkit's tokenization puts around every text (:func:`choose_leading`).

    Attributes:
        front: Token ids put in front of every text (excluded with ``include_bos: false``).
        back: Token ids put behind every text (dropped by tokenization: not text).
        source: ``"tokenizer"`` (its own setting), ``"added"`` (the toolkit made it add its BOS)
            or ``"none"`` (nothing in front: the first token is text).
        reason: One line saying why.
    """

    front: tuple[int, ...]
    back: tuple[int, ...] = ()
    source: LeadingSource = "tokenizer"
    reason: str = ""


def added_special_ids(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids ``tokenizer`` puts in front of and behind a text (BOS, XGLM's ``</s>``, EOS).

    Found by encoding a probe with and without special tokens: whatever surrounds the plain ids
    is what the tokenizer adds to every text.

    >>> from mlinguality.model import TinyModelConfig, build_tiny_tokenizer
    >>> added_special_ids(build_tiny_tokenizer(TinyModelConfig()))
    ((2,), ())
    """
    full = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start]), tuple(full[start + len(plain) :])
    logger.warning("cannot tell what the tokenizer adds around a text; assuming nothing")
    return (), ()


def choose_leading(tokenizer, hf_config=None) -> Leading:
    """Follow the tokenizer's own BOS setting, or make it add its BOS where the model needs one.

    A tokenizer that puts something in front (Gemma's ``<bos>``, XGLM's ``</s>``) is kept as it
    is. One with no BOS at all (Qwen, Falcon) gets nothing: the first token is text. One that
    declares a BOS but does not add it (GPT-2, BLOOM) is made to add it (``add_bos_token``), as
    TransformerLens prepends it, unless that token is a chat-turn marker of its chat template
    or not the checkpoint's ``bos_token_id``: a forced BOS must be one the model was trained
    to see first. Mutates ``tokenizer`` only in the ``"added"`` case.
    """
    front, back = added_special_ids(tokenizer)
    if front:
        return Leading(front, back, "tokenizer", "the tokenizer's own setting")
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is None or bos_id is None:
        return Leading((), back, "none", "the tokenizer has no BOS: the first token is text")
    if str(bos) in (getattr(tokenizer, "chat_template", None) or ""):
        return Leading(
            (),
            back,
            "none",
            f"BOS {bos} is a chat-turn token (its chat template uses it): not added",
        )
    model_bos = getattr(hf_config, "bos_token_id", None)
    if model_bos is not None and model_bos != bos_id:
        return Leading(
            (), back, "none", f"BOS {bos} is not the model's (bos_token_id={model_bos}): not added"
        )
    tokenizer.add_bos_token = True  # transformers rebuilds the post-processor around the text
    new_front, new_back = added_special_ids(tokenizer)
    if new_front != (bos_id,) or new_back != back:
        tokenizer.add_bos_token = False
        return Leading((), back, "none", f"the tokenizer cannot be made to add its BOS {bos}")
    return Leading(
        new_front,
        back,
        "added",
        "added: the tokenizer's BOS, which it does not add itself, as TransformerLens does",
    )


@contextmanager
def bridge_keeps_tokenizer(tokenizer) -> Iterator[None]:
    """Hide ``add_bos_token=False`` from TransformerBridge while it boots.

    Workaround: TransformerBridge's ``setup_tokenizer`` (transformer-lens 4.3,
    ``utilities.get_tokenizer_with_bos``) reloads every tokenizer that declares a BOS but whose
    ``add_bos_token`` is false from ``name_or_path`` with ``add_bos_token=True``: it would put
    SmolLM2-Instruct's chat token ``<|im_start|>`` in front of every text, and reloads Gemma's
    262k-entry tokenizer only to get the same one back. :func:`choose_leading` has decided
    already, so the flag reads true while the bridge boots and is restored after.
    """
    kwargs = tokenizer.init_kwargs
    missing = object()
    before = kwargs.get("add_bos_token", missing)
    kwargs["add_bos_token"] = True
    try:
        yield
    finally:
        if before is missing:
            kwargs.pop("add_bos_token", None)
        else:
            kwargs["add_bos_token"] = before


def checkpoint_d_mlp(hf_config) -> int | None:
    """The MLP width the checkpoint's own config states (None when it states none).

    ``n_inner: null`` (GPT-2) and ``ffn_hidden_size: null`` (Falcon) mean 4 x d_model; BLOOM's
    config has no field: its MLP is 4 x ``hidden_size``.
    """
    config = getattr(hf_config, "text_config", None) or hf_config
    d_model = getattr(config, "hidden_size", None)
    for name in _WIDTH_FIELDS:
        if hasattr(config, name):
            value = getattr(config, name)
            if isinstance(value, (list, tuple)):
                value = max(value) if value else None
            if value is None and d_model is not None:
                value = 4 * d_model
            return None if value is None else int(value)
    if getattr(config, "model_type", None) == "bloom" and d_model is not None:
        return 4 * d_model
    return None


def hook_widths(model) -> list[int]:
    """The last dimension ``blocks.L.mlp.hook_post`` shows, per layer (one 2-token forward)."""
    names = [hook_post_name(layer) for layer in range(model.cfg.n_layers)]
    ids = torch.tensor([[0, 1]], device=model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name in names)
    return [int(cache[name].shape[-1]) for name in names]


def correct_d_mlp(model, width: int) -> str | None:
    """Set ``model.cfg.d_mlp`` to ``width`` (what the hook shows); a note when it was not.

    Workaround: TransformerBridge (transformer-lens 4.3, ``sources/_hf_format.py``) reads
    ``d_mlp`` from ``n_inner``, ``intermediate_size`` or ``mlp_hidden_size`` and otherwise
    assumes 4 x d_model, so XGLM's and OPT's ``ffn_dim`` and Falcon's ``ffn_hidden_size`` go
    unread: XGLM-4.5B (d_model 2,048, ffn_dim 16,384) would get d_mlp = 8,192.
    """
    stated = model.cfg.d_mlp
    if stated == width:
        return None
    model.cfg.d_mlp = width
    note = f"d_mlp={width} from the hook (TransformerBridge's config said {stated})"
    logger.info("%s: %s", getattr(model.cfg, "model_name", "model"), note)
    return note


def _generic(pattern: str) -> str:
    """A hook name pattern with ``L`` for the layer: ``blocks.L.mlp.hook_post``."""
    return pattern.replace("{layer}", "L")


def is_gated(model) -> bool:
    """True for gated MLPs (hook_post = act(gate) * up): the bridge has ``hook_pre_linear``."""
    return HOOK_PRE_LINEAR.format(layer=0) in model.hook_dict


@dataclass
class FamilyFacts:
    """What ``mlinguality model check`` prints about a model (see :func:`describe`)."""

    architecture: str
    n_layers: int
    d_mlp: int
    checkpoint_d_mlp: int | None
    gated: bool
    hook_post: str
    canonical_post: str
    w_out_reads_post: bool
    leading: Leading
    leading_tokens: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def firing(self) -> str:
        return "gate > 0 (hook_pre)" if self.gated else "hook_post > 0"

    def lines(self) -> list[str]:
        """The facts, one line each."""
        width = f"d_mlp={self.d_mlp} (hook width"
        width += (
            f"; checkpoint config {self.checkpoint_d_mlp})"
            if self.checkpoint_d_mlp is not None
            else "; the checkpoint config states none)"
        )
        kind = "gated, act(gate) * up" if self.gated else "plain, act(W_in x)"
        hooks = [f"{self.hook_post} (= {self.canonical_post})"]
        hooks.append(_generic(HOOK_PRE) + (" (gate)" if self.gated else " (before the activation)"))
        if self.gated:
            hooks.append(_generic(HOOK_PRE_LINEAR) + " (up)")
        front = " ".join(self.leading_tokens) or "nothing"
        return [
            f"architecture: {self.architecture}, {self.n_layers} layers, {width}",
            f"MLP: {kind}; a neuron fires when {self.firing}",
            "hooks: " + ", ".join(hooks),
            "W_out reads hook_post: " + ("yes" if self.w_out_reads_post else "NO"),
            f"in front of every text: {front} ({self.leading.reason}); "
            + ("excluded with include_bos: false" if self.leading.front else "nothing to exclude"),
            *(f"needed: {note}" for note in self.notes),
        ]


def describe(model) -> FamilyFacts:
    """The family facts of a loaded model: MLP kind and width, hooks, leading tokens, notes."""
    config = getattr(model.original_model, "config", None)
    architectures = getattr(config, "architectures", None) or [type(model.original_model).__name__]
    leading = getattr(model, "mlinguality_leading", None)
    if leading is None:  # a bridge not made by load_model: what its tokenizer does
        front, back = added_special_ids(model.tokenizer)
        leading = Leading(front, back, "tokenizer" if front else "none", "as the tokenizer does")
    canonical = getattr(model.hook_dict[hook_post_name(0)], "name", None) or hook_post_name(0)
    return FamilyFacts(
        architecture=architectures[0],
        n_layers=model.cfg.n_layers,
        d_mlp=model.cfg.d_mlp,
        checkpoint_d_mlp=checkpoint_d_mlp(config),
        gated=is_gated(model),
        hook_post=_generic(HOOK_POST),
        canonical_post=canonical.replace("blocks.0.", "blocks.L.", 1),
        w_out_reads_post=w_out_reads_hook_post(model),
        leading=leading,
        leading_tokens=list(model.tokenizer.convert_ids_to_tokens(list(leading.front))),
        notes=list(getattr(model, "mlinguality_notes", [])),
    )


def w_out_reads_hook_post(model, layer: int = 0) -> bool:
    """Whether the value at ``blocks.L.mlp.hook_post`` is what enters the MLP's output
    projection (``W_out``): both captured in one forward, a torch pre-hook on the projection."""
    out = model.blocks[layer].mlp.out
    module = getattr(out, "original_component", out)
    seen: dict[str, torch.Tensor] = {}

    def at_hook(act, hook):
        seen["hook"] = act.detach().clone()
        return act

    handle = module.register_forward_pre_hook(
        lambda _m, args: seen.__setitem__("w_out", args[0].detach().clone())
    )
    ids = torch.tensor([[0, 1, 2]], device=model.cfg.device)
    try:
        with torch.no_grad():
            model.run_with_hooks(ids, fwd_hooks=[(hook_post_name(layer), at_hook)])
    finally:
        handle.remove()
    if "hook" not in seen or "w_out" not in seen:
        return False
    return bool(torch.equal(seen["hook"].reshape(seen["w_out"].shape), seen["w_out"]))
