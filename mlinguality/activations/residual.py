"""Residual-stream statistics taken in the collection pass (``collect(..., residual=True)``).

The hook is ``blocks.{L}.hook_resid_post``, the residual after block L. On a TransformerBridge
that name is an alias: the HookPoint that fires is ``blocks.{L}.hook_out``, the block's output
(``hook.name`` says so), i.e. the input of block L+1 and, for the last block, the residual
*before* the final norm. Two things are kept per language:

- ``example_resid_mean`` ``[example, layer, d_model]``: per example, the mean residual over the
  same counted positions as the MLP statistics (the position mask of ``positions`` and
  ``include_bos``);
- a *lens sample*: at most ``lens_positions`` counted positions that have a next token (not an
  example's last token), with their residual at every layer (``lens_resid``), the next token id
  (``lens_next``, the target a logit lens is scored on) and where they are (``lens_where``:
  example index, token position), sorted by (example, position). With ``positions="last"`` no
  counted position has a next token and the sample is empty.

The sample is a bottom-k sample: every eligible (example, position) pair gets a 64-bit key from a
counter-based generator (splitmix64 of a hash of ``lens_seed`` and the example's *id*, plus the
position), and the ``lens_positions`` smallest keys are kept. It is fixed from the tokens before
any forward pass, so it does not depend on batching, padding side or batch size; and since a
pair's key does not depend on which other examples are present, the union of shards' samples cut
back to the smallest keys is exactly the sample of the whole corpus
(:func:`~mlinguality.activations.sampling.merge_lens`).
"""

from __future__ import annotations

from collections.abc import Callable

import einops
import torch
from torch import Tensor

from mlinguality.activations.batching import Batch, _text_starts
from mlinguality.activations.reducer import StopForward
from mlinguality.activations.sampling import lens_sample, merge_lens  # noqa: F401 (re-exported)
from mlinguality.types import HOOK_RESID_POST, HookPoint, LensWhere, PositionMask, ResidActs


def residual_meta(lens_positions: int, lens_seed: int) -> dict:
    """The metadata a residual collection adds (part of the provenance merges compare)."""
    return {
        "residual": True,
        "resid_hook": HOOK_RESID_POST.replace("{layer}", "{L}"),
        "lens_positions": int(lens_positions),
        "lens_seed": int(lens_seed),
    }


class ResidualRecorder:
    """Per-batch reduction of ``blocks.{L}.hook_resid_post`` into the host statistics ``stats``.

    Use like :class:`~.reducer.BatchReducer`: :meth:`start` before each batch's forward pass,
    the hooks from :meth:`hook` during it (the last layer's raises :class:`StopForward`), then
    :meth:`finish`, which writes the batch's rows of ``stats.example_resid_mean`` and
    ``stats.lens_resid``. Inside hooks nothing waits for the device.
    """

    lag: int | None = None  # batches a result may wait before landing (None: 1 on CUDA, else 0)

    def __init__(self, stats, device: str | torch.device, n_layers: int, d_model: int):
        self.host = stats
        self.device = torch.device(device)
        self.n_layers, self.d_model = n_layers, d_model
        self.fired: set[int] = set()
        self._pending: list = []
        where = stats.lens_where.reshape(-1, 2)
        self._sample_of: dict[int, list[int]] = {}
        for sample, example in enumerate(where[:, 0].tolist()):
            self._sample_of.setdefault(example, []).append(sample)

    def start(self, mask: PositionMask, batch: Batch) -> None:
        """Prepare for ``batch``; ``mask`` (on the host) says which padded positions count."""
        mask = mask.cpu()
        n_rows, width = mask.shape
        kept = mask.flatten().nonzero().squeeze(-1)
        self.counts = einops.reduce(mask.long(), "batch pos -> batch", "sum")
        self.rows = list(batch.indices)
        self.kept = kept.to(self.device, non_blocking=True)
        self.example_of_kept = (kept // width).to(self.device, non_blocking=True)
        starts = _text_starts(torch.tensor(batch.lengths), width, batch.padding_side)
        samples, flat = [], []
        where = self.host.lens_where
        for row, example in enumerate(self.rows):
            for sample in self._sample_of.get(example, []):
                samples.append(sample)
                flat.append(row * width + int(starts[row]) + int(where[sample, 1]))
        self.samples = torch.tensor(samples, dtype=torch.long)
        self.lens_flat = torch.tensor(flat, dtype=torch.long).to(self.device, non_blocking=True)
        self._sum = torch.zeros((n_rows, self.n_layers, self.d_model), device=self.device)
        self._lens = torch.zeros((len(samples), self.n_layers, self.d_model), device=self.device)
        self.fired = set()

    def hook(self, layer: int) -> Callable[..., None]:
        """The hook for ``blocks.{layer}.hook_resid_post``."""

        def hook(resid: ResidActs, *, hook: HookPoint) -> None:
            flat = einops.rearrange(resid.detach(), "batch pos d_model -> (batch pos) d_model")
            if self.kept.numel():
                self._sum[:, layer].index_add_(
                    0, self.example_of_kept, flat.index_select(0, self.kept).float()
                )
            if self.lens_flat.numel():
                self._lens[:, layer] = flat.index_select(0, self.lens_flat).float()
            self.fired.add(layer)
            if layer == self.n_layers - 1:
                raise StopForward  # the last thing collection needs; the final norm never runs

        return hook

    def finish(self) -> None:
        """Queue the batch's per-example means and sampled residuals for the host statistics.

        On CUDA the copies are asynchronous (into pinned memory) and land in ``stats`` at the
        next batch's :meth:`finish` or at :meth:`flush`, so the host pads the next batch while
        the device still works; elsewhere they land at once.
        """
        divisor = self.counts.clamp_min(1).float()[:, None, None].to(self.device)
        results = [self._sum / divisor, self._lens]
        cuda = self.device.type == "cuda"
        copies = [torch.empty(t.shape, pin_memory=cuda) for t in results]
        for copy, result in zip(copies, results, strict=True):
            copy.copy_(result, non_blocking=cuda)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        self._pending.append((self.rows, self.samples, copies, event))
        lag = self.lag if self.lag is not None else int(cuda)
        while len(self._pending) > lag:
            self._land(*self._pending.pop(0))

    def flush(self) -> None:
        """Land every queued batch in ``stats`` (before a checkpoint and at the end)."""
        while self._pending:
            self._land(*self._pending.pop(0))

    def _land(self, rows: list[int], samples: Tensor, copies: list[Tensor], event) -> None:
        if event is not None:
            event.synchronize()
        self.host.example_resid_mean[rows] = copies[0]
        if len(samples):
            self.host.lens_resid[samples] = copies[1]


def empty_residual_fields(
    n_examples: int, n_layers: int, d_model: int, where: LensWhere
) -> dict[str, Tensor]:
    """Zero ``example_resid_mean`` and ``lens_resid`` for a fresh collection."""
    return {
        "example_resid_mean": torch.zeros((n_examples, n_layers, d_model)),
        "lens_resid": torch.zeros((where.shape[0], n_layers, d_model)),
    }
