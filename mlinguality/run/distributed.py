"""``torchrun -m mlinguality run CONFIG``: one run spread over the ranks of a process group.

Rank 0 runs the pipeline as a single process would (stage cache, run folder, report, W&B);
the other ranks serve it. When a stage needs the whole team, rank 0 broadcasts a task and
every rank does its share:

- ``collect``: each rank collects a token-balanced shard of the selection examples
  (:func:`~mlinguality.activations.distributed.shard_examples`); the statistics are all-reduced
  (:func:`~mlinguality.activations.distributed.all_reduce_stats`).
- ``ablate``: the baseline evaluations, then the (row, language) cells of the ablation matrix,
  are split across ranks by tokens and gathered on rank 0.

Gloo on CPUs, NCCL on GPUs (rank r on ``cuda:LOCAL_RANK``). Misuse ends with one line on every
rank: ranks started with different configs, more ranks than examples. A rank that dies makes
torchrun stop the others; rerunning with ``--resume RUN_DIR`` continues from the checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from mlinguality.errors import MlingualityError

logger = logging.getLogger(__name__)


def world_size() -> int:
    """Ranks of this launch (torchrun sets ``WORLD_SIZE``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Team:
    """This process's place in the process group."""

    rank: int
    world: int
    backend: str
    device: torch.device  # where collective tensors go

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, value=None):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value`` on every rank, in rank order."""
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    # --- the shared stages -----------------------------------------------------------------

    def collect(self, inputs, config, checkpoints: Path) -> dict:
        """Rank 0 and the workers: collect a shard each, all-reduce; the merged stats."""
        from mlinguality.activations.collect import collect
        from mlinguality.activations.distributed import (
            SubsetCorpus,
            all_reduce_stats,
            example_tokens,
            shard_examples,
        )

        if self.is_leader:
            self.broadcast(("collect", str(checkpoints)))
        _, select, _ = inputs.splits
        langs = list(config.corpus.langs)
        weights = example_tokens(inputs.model.tokenizer, select, langs)
        shards = _agreed(self, lambda: shard_examples(weights, self.world))
        coll = config.collection
        local = collect(
            inputs.model,
            SubsetCorpus(select, shards[self.rank]),
            langs,
            positions=coll.positions,
            include_bos=coll.include_bos,
            per_example=coll.per_example,
            batch_tokens=coll.batch_tokens,
            checkpoint_dir=Path(checkpoints) / f"rank{self.rank}-of-{self.world}",
            progress=self.is_leader,
        )
        return {lang: all_reduce_stats(local[lang], shards, self.device) for lang in langs}

    def ablate(self, inputs, config, encoded, masks, mean, meta):
        """Rank 0 and the workers: split baseline and matrix cells; rank 0 gets the matrix."""
        if self.is_leader:
            self.broadcast(("ablate", None))
            masks, mean, meta = self.broadcast((masks, mean, meta))
        else:
            masks, mean, meta = self.broadcast()
        from mlinguality.run.pipeline import ablation_model

        model = ablation_model(config, inputs)
        return split_ablation(self, model, config, encoded, masks, mean, meta)

    def stop(self) -> None:
        """Rank 0: release the workers."""
        if self.is_leader:
            self.broadcast(("stop", None))


def _agreed(team: Team, compute):
    """Run ``compute`` on every rank; a one-line error on every rank if any rank failed
    (so that no rank waits forever for a rank that raised)."""
    try:
        value, error = compute(), None
    except MlingualityError as failure:
        value, error = None, str(failure)
    errors = [message for message in team.gather(error) if message]
    if errors:
        raise MlingualityError(errors[0])
    return value


def start_team(config) -> Team:
    """Join the process group torchrun set up; check that every rank got the same config.

    NCCL when ``config.model.device`` is CUDA (each rank then uses ``cuda:LOCAL_RANK``), gloo
    otherwise. Raises :class:`MlingualityError` on every rank if the configs differ.
    """
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if config.model.device.startswith("cuda") else "gloo"
    if backend == "nccl":
        config.model.device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=float(os.environ.get("MLINGUALITY_DIST_TIMEOUT_S", "1800")))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    from mlinguality.activations.distributed import collective_device

    team = Team(
        dist.get_rank(), dist.get_world_size(), backend, collective_device(backend, local_rank)
    )
    settings = config.to_dict()
    settings["model"] = {k: v for k, v in settings["model"].items() if k != "device"}
    configs = team.gather(settings)
    for rank, other in enumerate(configs):
        if other != configs[0]:
            key = _first_difference(configs[0], other)
            raise MlingualityError(
                f"torchrun: rank {rank} was started with another config than rank 0 ({key} differs)"
            )
    return team


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            if left != right:
                return _first_difference(left, right, f"{prefix}{key}.")
        elif left != right:
            return f"{prefix}{key}"
    return prefix.rstrip(".") or "config"


def run_team(config, resume: Path | None = None) -> Path | None:
    """The whole run under torchrun: rank 0 leads (returns the run folder), others serve."""
    import torch.distributed as dist

    from mlinguality.run.runner import _Inputs, run_experiment

    team = start_team(config)
    try:
        if team.is_leader:
            try:
                return run_experiment(config, resume=resume, team=team)
            finally:
                team.stop()
        inputs = _Inputs(config)
        while True:
            task, payload = team.broadcast()
            if task == "collect":
                team.collect(inputs, config, Path(payload))
            elif task == "ablate":
                from mlinguality.run.pipeline import encode_held_out

                _, encoded = encode_held_out(config, inputs)
                team.ablate(inputs, config, encoded, None, None, None)
            else:
                return None
    finally:
        dist.destroy_process_group()


def _assign(weights: list[int], world: int) -> list[int]:
    """Owner rank of each unit: heaviest first to the least loaded rank (deterministic)."""
    load, owner = [0] * world, [0] * len(weights)
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owner[index], load[rank] = rank, load[rank] + weights[index]
    return owner


def split_ablation(team: Team, model, config, encoded: dict, masks: dict, mean, meta: dict):
    """The ablation matrix of ``masks`` with its evaluations split across the team.

    First the baseline (one unit per language), then one unit per (row, language) cell (the
    cell of a row's own language also runs its random controls), each balanced by tokens over
    the ranks and gathered. Returns the :class:`AblationMatrix` on rank 0, None elsewhere; the
    numbers are those of the one-process matrix (same evaluations, same random seeds).
    """
    from mlinguality.ablation.evaluation import evaluate
    from mlinguality.ablation.matrix import AblationMatrix, ablation_matrix

    ab = config.ablation
    langs = list(encoded)
    tokens = {lang: sum(len(text.ids) for text in encoded[lang].texts) for lang in langs}
    with torch.no_grad():
        owner = _assign([tokens[lang] for lang in langs], team.world)
        mine = {}
        for lang, rank in zip(langs, owner, strict=True):
            if rank == team.rank:
                mine[lang] = evaluate(model, encoded[lang])
        baseline = {lang: loss for part in team.gather(mine) for lang, loss in part.items()}
        baseline = {lang: baseline[lang] for lang in langs}
        cells = [(row, lang) for row in masks for lang in langs]
        weights = [tokens[lang] * (1 + ab.n_random if row == lang else 1) for row, lang in cells]
        done = []
        for (row, lang), r in zip(cells, _assign(weights, team.world), strict=True):
            if r != team.rank:
                continue
            part = ablation_matrix(
                model,
                {lang: encoded[lang]},
                {row: masks[row]},
                ab.mode,
                mean=mean,
                n_seeds=ab.n_random,
                seed=config.seed,
                baseline={lang: baseline[lang]},
                meta=meta,
            )
            done.append((row, lang, part.ablated.get(row, {}).get(lang), part.random.get(row)))
    results = [cell for part in team.gather(done) for cell in part]
    if not team.is_leader:
        return None
    ablated: dict[str, dict] = {}
    random: dict[str, list] = {}
    for row, lang, loss, randoms in sorted(
        results, key=lambda cell: (list(masks).index(cell[0]), langs.index(cell[1]))
    ):
        if loss is not None:
            ablated.setdefault(row, {})[lang] = loss
        if randoms is not None:
            random[row] = randoms
    return AblationMatrix(
        langs=langs,
        rows=list(masks),
        mode=ab.mode,
        baseline=baseline,
        ablated=ablated,
        random=random,
        n_neurons={row: int(mask.sum()) for row, mask in masks.items()},
        meta=meta,
    )
