"""Resumable fine-tuning: where a job checkpoints, and which checkpoint it may resume from.

Usage (through `training.finetune.finetune(..., checkpoint=CheckpointSpec(...))`)::

    CheckpointSpec(dir, name="warmup", stop_at=15)                  # stop after the warm-up
    CheckpointSpec(dir, every_steps=15, fallback=f"{dir}/warmup.ckpt")  # the rest; resumable

A checkpoint holds Lightning's state (weights, optimizer, LR schedule, loop counters) and ftctl's
(the stream position, the replayed ids of every rank, the step history) plus the *stream
signature*: the recipe, the task, the replay schedule and its switches. A job resumes only from a
checkpoint whose stream up to its step is exactly the job's — a retried release whose replay
plan changed does not continue a model trained on the old plan: it falls back to the warm-up
checkpoint (identical for any plan), or starts afresh. So resuming is always exact: the same
weights, to the last bit, as one uninterrupted fit (tests/training/test_checkpoint.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from common.atomic import partial_name


@dataclass(frozen=True)
class CheckpointSpec:
    """Resumable training: a Lightning checkpoint at `<dir>/<name>.ckpt`.

    every_steps : also checkpoint every this many optimizer steps (0: only where training stops),
        so that a job whose worker dies resumes from the last one instead of step 0.
    stop_at : stop after this many optimizer steps (of `config.steps`) and checkpoint — the warm-up
        segment of a staged online release; a later call with the same config resumes it.
    resume : continue from the checkpoint when it exists and is compatible (model, optimizer,
        schedule, stream position, replayed ids and history are restored; the LR schedule still
        spans `config.steps`).
    fallback : another checkpoint to start from when this one is missing or incompatible (the
        train segment of an online release starts from the warm-up's).
    """

    dir: str
    every_steps: int = 0
    stop_at: int | None = None
    resume: bool = True
    name: str = "last"
    fallback: str | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.dir, f"{self.name}.ckpt")


def stream_signature(config: dict[str, Any], train_ids: list[str], ratio: float,
                     schedule: list[tuple[str, float]],
                     switches: list[tuple[int, list[tuple[str, float]]]], per_step: int) -> dict[str, Any]:
    """What determines the training stream: two jobs with equal signatures up to step s trained
    the same model until s."""
    cfg = {k: v for k, v in config.items() if k != "num_threads"}
    task = hashlib.sha256("\n".join(train_ids).encode()).hexdigest()[:16]
    return json.loads(json.dumps({
        "config": cfg, "task": task, "ratio": ratio, "per_step": per_step,
        "schedule": [[i, float(w)] for i, w in schedule],
        "switches": [[int(p), [[i, float(w)] for i, w in s]] for p, s in switches]}, default=str))


def _compatible(saved: dict[str, Any] | None, ours: dict[str, Any], step: int) -> bool:
    if not saved:
        return False
    same = all(saved.get(k) == ours.get(k) for k in ("config", "task", "ratio", "per_step", "schedule"))
    upto = step * int(ours.get("per_step") or 1)  # switches that took effect before the step
    return same and ([s for s in saved.get("switches", []) if s[0] < upto]
                     == [s for s in ours["switches"] if s[0] < upto])


def resume_point(spec: CheckpointSpec | None, signature: dict[str, Any]) -> tuple[int, str | None]:
    """(optimizer steps already done, checkpoint to resume from) — (0, None): start afresh."""
    if spec is None or not spec.resume:
        return 0, None
    import torch

    for path in (spec.path, spec.fallback):
        if not path or not os.path.isfile(path):
            continue
        # mmap: read the step and ftctl's state without loading weights and optimizer into RAM.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        step = int(ckpt["global_step"])
        if spec.stop_at is not None and step > spec.stop_at:
            continue  # trained past where this segment stops: not what it resumes
        if _compatible(ckpt.get("ftctl", {}).get("signature"), signature, step):
            return step, path
    return 0, None


class Checkpointing(L.Callback):
    """Writes `spec.path` atomically (every `every_steps`, at `stop_at`, at the end) with ftctl's
    state next to Lightning's."""

    def __init__(self, spec: CheckpointSpec, mixture: Any, total: int, signature: dict[str, Any]):
        self.spec, self.mixture, self.total, self.signature = spec, mixture, total, signature
        self.saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        # Not common.atomic.atomic_path: every rank must agree on one temporary name (rank 0's,
        # broadcast) and only rank 0 moves it into place.
        tmp = str(partial_name(Path(self.spec.path)))
        tmp = trainer.strategy.broadcast(tmp, src=0)  # one name on every rank
        trainer.save_checkpoint(tmp)  # rank 0 writes; a crash mid-write leaves the old one intact
        if trainer.is_global_zero:
            os.replace(tmp, self.spec.path)
        trainer.strategy.barrier()
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step == self.saved_step:
            return  # later micro-batches of an accumulated step: its checkpoint is written
        stop = self.spec.stop_at is not None and step >= self.spec.stop_at
        every = self.spec.every_steps and step % self.spec.every_steps == 0 and 0 < step < self.total
        if stop or every:
            self._save(trainer)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.global_step >= self.total and self.saved_step != trainer.global_step:
            self._save(trainer)  # finished: a redelivered job resumes at the end, not at step 0

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Every rank replays its own shard of the stream: keep all ranks' replayed ids.
        consumed = _gather_lists(list(self.mixture.consumed))
        checkpoint["ftctl"] = {"consumed_by_rank": consumed,
                               "positions_consumed": self.mixture.positions_consumed,
                               "history": list(pl_module.history), "signature": self.signature}

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        restore(self.mixture, pl_module, checkpoint, rank=getattr(trainer, "global_rank", 0))


def restore(mixture: Any, pl_module: Any, checkpoint: dict[str, Any], rank: int = 0) -> None:
    """ftctl's part of a checkpoint back into the mixture and the module."""
    state = checkpoint.get("ftctl", {})
    parts = state.get("consumed_by_rank") or [state.get("consumed", [])]
    mixture.consumed[:] = parts[rank] if rank < len(parts) else []
    mixture.positions_consumed = int(state.get("positions_consumed", 0))
    pl_module.history[:] = state.get("history", [])


def _gather_lists(ids: list[str]) -> list[list[str]]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [ids]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, ids)
    return [list(p) for p in parts]
