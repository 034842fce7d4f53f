"""Hook functions that fold each batch's MLP activations into statistics kept on the model's device.

The accumulators of a language (float64 where the device has it, float32 on MPS) live on the
device for the whole language: a hook launches a handful of kernels and never waits for the
device (no ``.cpu()``, ``.item()`` or data-dependent shapes inside hooks). Which positions count
and how many there are is decided on the host before the forward pass, so the host never needs
to read anything back. Per batch, the per-layer results land in ``[layer, d_mlp]`` buffers and
are folded into the running statistics once, after the forward pass: one Chan update for the
whole batch instead of one per layer. Statistics reach the host only when asked for
(:meth:`BatchReducer.to_stats`: at the end of a language and at checkpoints); per-example
tensors come back once per batch.

Precision: a batch's sum is taken in float32 (bf16/fp16 activations are cast first) and added
to a float64 running sum; its spread is taken about the batch's own mean (``sum((x - m_b)**2)``,
float32, which stays exact to ~1e-6 relative at any mean/sd) and combined in float64 by Chan's
update, so the variance does not suffer the cancellation of a raw sum of squares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mlinguality.activations.stats import ActivationStats
from mlinguality.types import HookPoint, MlpActs, PositionMask


class StopForward(Exception):
    """Raised from the last needed hook to leave the forward pass early."""


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (CPU, CUDA); float32 on Apple's MPS."""
    return torch.float32 if device.type == "mps" else torch.float64


class BatchReducer:
    """Running statistics of one language on ``device``, fed by forward hooks batch by batch.

    Use: :meth:`start` before each batch's forward pass, the hooks from :meth:`post_hook` and
    :meth:`pre_hook` during it, :meth:`finish` after it; :meth:`to_stats` copies everything to
    a host :class:`ActivationStats`.
    """

    def __init__(
        self,
        stats: ActivationStats,
        device: str | torch.device,
        per_example: bool,
        stop_after_last: bool = True,
    ):
        self.host = stats
        self.device = torch.device(device)
        self.n_layers, self.d_mlp = stats.n_layers, stats.d_mlp
        self.gated = stats.n_gate_positive is not None
        self.per_example = per_example
        self.stop_after_last = stop_after_last
        acc = accumulator_dtype(self.device)
        self.n_tokens = stats.n_tokens
        self.sum = stats.sum.to(self.device, acc)
        self.m2 = stats.m2.to(self.device, acc)
        self.n_positive = stats.n_positive.to(self.device)
        self.max = stats.max.to(self.device, torch.float32)
        self.n_gate_positive = stats.n_gate_positive.to(self.device) if self.gated else None
        shape = (self.n_layers, self.d_mlp)
        self._sum = torch.zeros(shape, device=self.device)
        self._m2 = torch.zeros(shape, device=self.device)
        self._positive = torch.zeros(shape, dtype=torch.int32, device=self.device)
        self._gate = torch.zeros(shape, dtype=torch.int32, device=self.device)
        self.fired: set[int] = set()
        self.gate_fired: set[int] = set()
        self.batch_tokens = 0

    # --- per batch ------------------------------------------------------------------------

    def start(self, mask: PositionMask, rows: Sequence[int]) -> None:
        """Prepare for a batch. ``mask`` (on the host) says which padded positions count."""
        mask = mask.cpu()
        kept = mask.flatten().nonzero().squeeze(-1)
        self.counts = einops.reduce(mask.long(), "batch pos -> batch", "sum")
        self.batch_tokens = int(kept.numel())
        self.rows = torch.as_tensor(list(rows), dtype=torch.long)
        self.kept = kept.to(self.device, non_blocking=True)
        self._positive.zero_()
        self._gate.zero_()
        self.fired, self.gate_fired = set(), set()
        if self.per_example:
            n_rows, width = mask.shape
            self.example_of_kept = (kept // width).to(self.device, non_blocking=True)
            self._divisor = self.counts.clamp_min(1).float()[:, None].to(self.device)
            buffer = (n_rows, self.n_layers, self.d_mlp)
            self._example_sum = torch.zeros(buffer, device=self.device)
            self._example_pos = torch.zeros(buffer, device=self.device)
            self._example_gate = torch.zeros(buffer, device=self.device) if self.gated else None

    def _gather(self, acts: MlpActs) -> Float[Tensor, "token d_mlp"]:
        """The counted positions as a fresh float32 ``[token, d_mlp]`` copy (free to modify)."""
        flat = einops.rearrange(acts.detach(), "batch pos d_mlp -> (batch pos) d_mlp")
        return flat.index_select(0, self.kept).float()

    def post_hook(self, layer: int) -> Callable[..., None]:
        """The hook for ``blocks.{layer}.mlp.hook_post``."""

        def hook(acts: MlpActs, *, hook: HookPoint) -> None:
            if self.batch_tokens:
                self._reduce_post(layer, self._gather(acts))
            self.fired.add(layer)
            if self.stop_after_last and layer == self.n_layers - 1:
                raise StopForward  # every layer's gate hook (hook_pre) fired before this one

        return hook

    def pre_hook(self, layer: int) -> Callable[..., None]:
        """The hook for ``blocks.{layer}.mlp.hook_pre`` (gated MLPs: the gate pre-activation)."""

        def hook(pre: MlpActs, *, hook: HookPoint) -> None:
            if self.batch_tokens:
                positive = self._gather(pre) > 0
                self._gate[layer] = count_true(positive)
                if self.per_example:
                    self._example_gate[:, layer].index_add_(
                        0, self.example_of_kept, positive.float()
                    )
            self.gate_fired.add(layer)

        return hook

    def _reduce_post(self, layer: int, kept: Float[Tensor, "token d_mlp"]) -> None:
        positive = kept > 0
        self._positive[layer] = count_true(positive)
        torch.maximum(self.max[layer], kept.amax(0), out=self.max[layer])
        batch_sum = kept.sum(0)  # float32 over <= batch_tokens terms
        self._sum[layer] = batch_sum
        if self.per_example:
            self._example_sum[:, layer].index_add_(0, self.example_of_kept, kept)
            self._example_pos[:, layer].index_add_(0, self.example_of_kept, positive.float())
        # spread about the batch's own mean, in place on our private copy
        self._m2[layer] = kept.sub_(batch_sum / self.batch_tokens).square_().sum(0)

    def finish(self) -> dict[str, Float[Tensor, "batch layer d_mlp"] | None] | None:
        """Fold the batch into the running statistics (after its forward pass).

        Returns the batch's per-example tensors on the host (``mean``, ``frac_positive``,
        ``frac_gate_positive``, ``[batch, layer, d_mlp]``) when collecting per example.
        """
        n_a, n_b = self.n_tokens, self.batch_tokens
        if n_b:
            batch_sum = self._sum.to(self.sum.dtype)
            if n_a:
                delta = batch_sum / n_b - self.sum / n_a
                self.m2 += self._m2 + delta.square() * (n_a * n_b / (n_a + n_b))
            else:
                self.m2 += self._m2
            self.sum += batch_sum
            self.n_positive += self._positive
            if self.gated:
                self.n_gate_positive += self._gate
            self.n_tokens = n_a + n_b
        if not self.per_example:
            return None
        shares = {
            "mean": self._example_sum,
            "frac_positive": self._example_pos,
            "frac_gate_positive": self._example_gate,
        }
        return {
            name: (value / self._divisor[:, :, None]).cpu() if value is not None else None
            for name, value in shares.items()
        }

    # --- to the host ----------------------------------------------------------------------

    def to_stats(self) -> ActivationStats:
        """The running statistics copied into the host :class:`ActivationStats` (returned)."""
        stats = self.host
        stats.n_tokens = self.n_tokens
        stats.sum = self.sum.to("cpu", torch.float64, copy=True)
        stats.m2 = self.m2.to("cpu", torch.float64, copy=True)
        stats.n_positive = self.n_positive.to("cpu", copy=True)
        stats.max = self.max.to("cpu", copy=True)
        if self.gated:
            stats.n_gate_positive = self.n_gate_positive.to("cpu", copy=True)
        return stats


def count_true(flags: Bool[Tensor, "token d_mlp"]) -> Int[Tensor, " d_mlp"]:
    """Per-neuron count of True (summing bytes into int32: ~3x faster than bool -> int64)."""
    return flags.view(torch.uint8).sum(0, dtype=torch.int32)
