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

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from mlinguality.activations.distributed import world_size
from mlinguality.errors import MlingualityError, RunFault

__all__ = ["Team", "run_team", "start_team", "world_size"]


@dataclass
class Team:
    """This process's place in the process group."""

    rank: int
    world: int
    backend: str
    device: torch.device  # where collective tensors go
    stopped: bool = False  # rank 0: the workers were released

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, value=None):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        import torch.distributed as dist

        box = [value]
        with peers_alive():
            dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value`` on every rank, in rank order."""
        import torch.distributed as dist

        out = [None] * self.world
        with peers_alive():
            dist.all_gather_object(out, value)
        return out

    # --- the shared stages -----------------------------------------------------------------

    def collect(self, inputs, config, checkpoints: Path) -> dict:
        """Rank 0 and the workers: collect a shard each, all-reduce; the merged stats."""
        from mlinguality.activations.collect import collect
        from mlinguality.activations.distributed import (
            all_reduce_stats,
            example_tokens,
            shard_examples,
        )

        if self.is_leader:
            self.broadcast(("collect", str(checkpoints)))
        _, select, _ = inputs.splits
        langs = list(config.collection_langs)  # corpus.langs and the same-language controls
        weights = example_tokens(inputs.model.tokenizer, select, langs)
        shards = _agreed(self, lambda: shard_examples(weights, self.world))
        coll = config.collection
        local = collect(
            inputs.model,
            select.subset(shards[self.rank]),
            langs,
            positions=coll.positions,
            include_bos=coll.include_bos,
            per_example=coll.per_example,
            batch_tokens=config.collection_batch_tokens,
            checkpoint_dir=Path(checkpoints) / f"rank{self.rank}-of-{self.world}",
            progress=self.is_leader,
            **config.residual_collection,
        )
        with peers_alive():
            return {lang: all_reduce_stats(local[lang], shards, self.device) for lang in langs}

    def ablate(self, inputs, config, encoded, settings=None):
        """Rank 0 and the workers: split the evaluations; rank 0 gets the matrix.

        ``settings`` (rank 0 only): ``(masks, mean, activity, meta)`` of
        :func:`mlinguality.run.steps.ablate.ablate`, sent to the workers.
        """
        from mlinguality.run.steps.ablate import ablation_model

        if self.is_leader:
            self.broadcast(("ablate", None))
        masks, mean, activity, meta = self.broadcast(settings)
        model = ablation_model(config, inputs)
        return split_ablation(self, model, config, encoded, masks, mean, activity, meta)

    def stop(self) -> None:
        """Rank 0: release the workers (once; the runner does it after the last shared stage,
        so that no worker waits out the collective timeout during rank 0's own stages)."""
        if self.is_leader and not self.stopped:
            self.broadcast(("stop", None))
            self.stopped = True


@contextlib.contextmanager
def peers_alive():
    """Turn a collective's failure because another rank is gone (gloo: "Connection closed by
    peer", NCCL: a remote error) into one line, instead of the backend's C++ source path.

    Other errors (a bug in the code between the collectives) pass through unchanged.

    >>> with peers_alive():
    ...     raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:6020. Check")
    Traceback (most recent call last):
    mlinguality.errors.RunFault: torchrun: another rank stopped (Connection closed by peer [127.0.0.1]:6020)
    >>> with peers_alive():
    ...     raise RuntimeError("shape mismatch")
    Traceback (most recent call last):
    RuntimeError: shape mismatch
    """
    try:
        yield
    except RuntimeError as error:
        if not _peer_gone(error):
            raise
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0])
        reason = reason.split(". ")[0]  # gloo adds advice (and an emoji) after the first sentence
        raise RunFault(f"torchrun: another rank stopped ({reason})") from None


_PEER_GONE = re.compile(
    r"closed by peer|reset by peer|connection refused|broken pipe|timed out|timeout|nccl|remote",
    re.IGNORECASE,
)


def _peer_gone(error: RuntimeError) -> bool:
    """Whether a collective's error says another rank (or the connection to it) is gone."""
    from torch import distributed

    dist_error = getattr(distributed, "DistError", ())
    return isinstance(error, dist_error) or bool(_PEER_GONE.search(str(error)))


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
        _check_rank_device(local_rank)
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


def _check_rank_device(local_rank: int) -> None:
    """One line, not a CUDA traceback, when this rank has no GPU of its own (NCCL: one per rank)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local_rank >= count:
        raise MlingualityError(
            f"torchrun: model.device=cuda gives each rank its own GPU (cuda:LOCAL_RANK), but "
            f"LOCAL_RANK {local_rank} has none: this machine has {count} CUDA device(s); "
            + (
                f"start at most {count} per node (--nproc-per-node {count})"
                if count
                else "use model.device=cpu (gloo)"
            )
        )


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            if left != right:
                return _first_difference(left, right, f"{prefix}{key}.")
        elif left != right:
            return f"{prefix}{key}"
    return prefix.rstrip(".") or "config"


def run_team(config, resume: Path | None = None, start_from: Path | None = None) -> Path | None:
    """The whole run under torchrun: rank 0 leads (returns the run folder), others serve."""
    import torch.distributed as dist

    from mlinguality.run.inputs import RunInputs
    from mlinguality.run.runner import run_experiment

    team = start_team(config)
    try:
        if team.is_leader:
            try:
                run_dir = run_experiment(config, resume=resume, team=team, start_from=start_from)
            except BaseException:
                # the workers may have stopped on the same error already, and torchrun's SIGTERM
                # may arrive now (a rank died): keep rank 0's line either way
                with contextlib.suppress(BaseException):
                    team.stop()
                raise
            team.stop()
            return run_dir
        inputs = RunInputs(config)
        while True:
            task, payload = team.broadcast()
            if task == "collect":
                team.collect(inputs, config, Path(payload))
            elif task == "ablate":
                from mlinguality.run.steps.ablate import encode_held_out

                _, encoded = encode_held_out(config, inputs)
                team.ablate(inputs, config, encoded)
            else:
                return None
    finally:
        with contextlib.suppress(BaseException):  # as above: the error in flight is the line
            dist.destroy_process_group()


def split_ablation(
    team: Team, model, config, encoded: dict, masks: dict, mean, activity, meta: dict
):
    """The ablation matrix of ``masks`` with its evaluations split across the team.

    First the baseline (one unit per language), then one unit per (row, language) cell (the
    cell of a row's own language also runs its random controls), each balanced by tokens over
    the ranks (:func:`~mlinguality.activations.distributed.balance`) and gathered. Returns the
    :class:`~mlinguality.ablation.matrix.AblationMatrix` on rank 0, None elsewhere; its numbers
    are those of the one-process matrix (same evaluations, same random seeds).
    """
    from tqdm.auto import tqdm

    from mlinguality.ablation.evaluation import evaluate
    from mlinguality.ablation.matrix import ablation_matrix, join_matrices
    from mlinguality.activations.distributed import balance

    ab = config.ablation
    langs = list(encoded)
    tokens = {lang: sum(len(text.ids) for text in encoded[lang].texts) for lang in langs}
    n_controls = ab.n_random * (2 if activity is not None else 1)  # count- and activity-matched
    with torch.no_grad():
        owner = balance([tokens[lang] for lang in langs], team.world)
        mine = {
            lang: evaluate(model, encoded[lang])
            for lang, rank in zip(langs, owner, strict=True)
            if rank == team.rank
        }
        baseline = {lang: loss for part in team.gather(mine) for lang, loss in part.items()}
        baseline = {lang: baseline[lang] for lang in langs}
        cells = [(row, lang) for row in masks for lang in langs]
        weights = [tokens[lang] * (1 + n_controls if row == lang else 1) for row, lang in cells]
        owner = balance(weights, team.world)
        own = [cell for cell, rank in zip(cells, owner, strict=True) if rank == team.rank]
        parts = [
            ablation_matrix(
                model,
                {lang: encoded[lang]},
                {row: masks[row]},
                ab.mode,
                mean=mean,
                n_seeds=ab.n_random,
                seed=config.seed,
                baseline={lang: baseline[lang]},
                meta=meta,
                positions=ab.positions,
                activity=activity,
                log=False,
            )
            for row, lang in tqdm(own, desc="ablation cells", disable=not team.is_leader)
        ]
    gathered = [part for rank_parts in team.gather(parts) for part in rank_parts]
    if not team.is_leader:
        return None
    return join_matrices(gathered, list(masks), baseline)
