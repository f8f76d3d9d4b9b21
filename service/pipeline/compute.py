"""The heavy half of a job: fine-tune, then measure — no MLflow, no registry.

These functions take plain, picklable specs and return plain outcomes, so the in-process
runner can fan them out to worker processes (one torch thread each: measured 15-30 % more
throughput on 2 cores than one process with two threads) and the Celery workers can call the
same code. Logging happens in the caller, at the edge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.atomic import atomic_path
from service.errors import JobStopped
from service.settings import Settings


@dataclass
class TrainSpec:
    """One fine-tune of `model_dir` on a task, then NLL measurement of chosen upstream examples."""

    settings: Settings
    task_ref: str
    model_dir: str
    steps: int
    measure: np.ndarray  # upstream column indices to measure after training
    replay_ids: list[str] = field(default_factory=list)  # initial replay schedule (ids)
    replay_ratio: float = 0.0
    save_dir: str | None = None  # where to save the trained model (None: do not save)
    num_threads: int | None = None
    seed: int = 0
    # Later replay schedules from a stream position on (a staged online release's plan).
    switches: list[tuple[int, list[tuple[str, float]]]] = field(default_factory=list)
    checkpoint_dir: str | None = None  # resumable: <dir>/<name>.ckpt (training.checkpoint)
    checkpoint_name: str = "last"
    checkpoint_fallback: str | None = None  # start from this one when ours is missing/incompatible
    stop_at: int | None = None  # stop (and checkpoint) after this many of `steps`
    extra_pool: list[Any] = field(default_factory=list)  # replayable Examples beside the upstream set
    checkpoint_every: int = 0  # also checkpoint every this many steps (a dead worker resumes)
    # Test splits measured after training beside the task's own (earlier tasks of the chain):
    # name -> Examples; their mean NLL comes back in TrainOutcome.eval_after.
    eval_sets: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class TrainOutcome:
    measured: np.ndarray  # column indices
    nll_after: np.ndarray  # aligned with `measured`
    test_before: float
    test_after: float
    replayed_ids: list[str]
    history: list[dict[str, float]]
    steps: int
    seconds: float
    save_dir: str | None = None
    resumed_from: int = 0  # steps a checkpoint of an earlier attempt had already trained
    eval_after: dict[str, float] = field(default_factory=dict)  # TrainSpec.eval_sets' mean NLL


def finetune_config(settings: Settings, steps: int, seed: int, num_threads: int | None = None) -> Any:
    """The line's fine-tuning recipe (a world preset's suggestion; FinetuneConfig's defaults for
    a line of your own data), overridden by what the settings set explicitly."""
    from service.pipeline.inputs import encoding, line_recipe
    from training.config import FinetuneConfig, LoraSettings

    fields: dict[str, Any] = line_recipe(settings)
    fields["max_length"] = encoding(settings).max_length
    if settings.lr:
        fields["lr"] = settings.lr
    if settings.batch_size:
        fields["batch_size"] = settings.batch_size
    if settings.lora is False:
        fields.pop("lora", None)
    elif settings.lora and "lora" not in fields:
        fields["lora"] = LoraSettings()
    if isinstance(fields.get("lora"), dict):
        fields["lora"] = LoraSettings(**fields["lora"])
    fields["warmup_steps"] = min(int(fields.get("warmup_steps", 10)), steps)
    return FinetuneConfig(**{**fields, "steps": steps, "seed": seed, "num_threads": num_threads})


def task_steps(settings: Settings) -> int:
    """Fine-tuning steps per task: the settings' value, else the line's recipe (150 by default)."""
    from service.pipeline.inputs import line_recipe

    return settings.steps or int(line_recipe(settings).get("steps", 150))


def step_messages(say: Callable[[str], None], label: str, parts: int = 50,
                  total: int | None = None) -> Callable[..., None]:
    """A training progress callback (step, total, history entry) reporting "<label>: step i/n,
    loss x" every 1/parts of the way (the CLI draws bars from it; Celery reports stage + ETA).
    `total` overrides the trainer's (a warm-up that stops early)."""

    def report(step: int, steps: int, entry: dict[str, float] | None = None) -> None:
        n = total or steps
        if step >= n or step % max(1, n // parts) == 0:
            loss = f", loss {entry['loss']:.3f}" if entry and "loss" in entry else ""
            say(f"{label}: step {min(step, n)}/{n}{loss}")

    return report


def count_messages(say: Callable[[str], None], label: str, parts: int = 50) -> Callable[[int, int], None]:
    """A measurement progress callback (done, total) reporting "<label>: step i/n"."""
    last = {"part": -1}

    def report(done: int, total: int) -> None:
        part = parts * done // max(total, 1)
        if part != last["part"] or done >= total:
            last["part"] = part
            say(f"{label}: step {done}/{total}")

    return report


def replay_steps(steps: int, ratio: float) -> int:
    """Training length with replay: the study extends max_steps by (1 + r)."""
    return round(steps * (1 + ratio)) if ratio > 0 else steps


def train_and_measure(
    spec: TrainSpec,
    *,
    logger: Any = None,
    progress: Callable[..., None] | None = None,
    measure_progress: Callable[[int, int], None] | None = None,
) -> TrainOutcome:
    from service.pipeline.inputs import encoding, load_model_for, load_upstream, resolve_task
    from training.finetune import CheckpointSpec, ReplaySpec, finetune
    from training.model import save_model
    from training.nll import measure_nll

    if spec.num_threads:
        import torch

        torch.set_num_threads(spec.num_threads)
    t0 = time.perf_counter()
    upstream = load_upstream(spec.settings)
    task = resolve_task(spec.settings, spec.task_ref)
    enc = encoding(spec.settings)
    options = enc.nll_options()
    model, tok = load_model_for(spec.settings, spec.model_dir)
    test_before = float(np.mean(measure_nll(model, tok, task.test, **options)))
    replay = None
    if spec.replay_ratio > 0:
        excluded = frozenset(np.asarray(upstream.ids)[upstream.heldout].tolist())
        pool = {**upstream.by_id, **{e.id: e for e in spec.extra_pool}}
        replay = ReplaySpec(pool=pool, schedule=[(i, 1.0) for i in spec.replay_ids],
                            ratio=spec.replay_ratio, exclude_ids=excluded, switches=spec.switches)
    cfg = finetune_config(spec.settings, spec.steps, spec.seed, spec.num_threads)
    ckpt = None
    if spec.checkpoint_dir:
        ckpt = CheckpointSpec(spec.checkpoint_dir, every_steps=spec.checkpoint_every,
                              stop_at=spec.stop_at, name=spec.checkpoint_name,
                              fallback=spec.checkpoint_fallback)
    result = finetune(model, tok, task.train, cfg, replay=replay, logger=logger,
                      progress=progress, checkpoint=ckpt, data=enc.task_config())
    model = result.model
    test_after = float(np.mean(measure_nll(model, tok, task.test, **options)))
    # The same measure as test_after, so a chain compares an earlier task's loss like for like.
    eval_after = {name: float(np.mean(measure_nll(model, tok, exs, **options)))
                  for name, exs in spec.eval_sets.items() if exs}
    examples = [upstream.examples[i] for i in spec.measure]
    after = (measure_nll(model, tok, examples, progress=measure_progress, **options)
             if examples else np.zeros(0))
    if spec.save_dir:
        with atomic_path(spec.save_dir) as tmp:  # replaces what a rerun of this stage saved before
            save_model(model, tok, tmp)
    return TrainOutcome(
        measured=np.asarray(spec.measure), nll_after=np.asarray(after, dtype=np.float64),
        test_before=test_before, test_after=test_after, replayed_ids=list(result.replayed_ids),
        history=list(result.history), steps=result.steps, resumed_from=result.resumed_from,
        seconds=time.perf_counter() - t0, save_dir=spec.save_dir, eval_after=eval_after,
    )


def _pool_entry(spec: TrainSpec) -> TrainOutcome:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return train_and_measure(spec)


def run_parallel(specs: list[TrainSpec], workers: int,
                 on_done: Callable[[int, TrainOutcome | BaseException], None],
                 progress: Callable[[int], Callable[..., None]] | None = None) -> None:
    """Run specs in `workers` spawned processes (torch is not fork-safe), calling `on_done` in
    this process as each finishes — with the outcome, or the exception that ended it, so one
    bad task does not take the others down. `progress(i)` gives spec i's step callback when the
    specs run in this process (a callback does not cross into a worker process).
    """
    if workers <= 1 or len(specs) <= 1:
        for i, s in enumerate(specs):
            try:
                outcome: TrainOutcome | BaseException = train_and_measure(
                    s, progress=progress(i) if progress else None)
            except JobStopped:
                raise  # the whole job stops, not just this spec
            except Exception as e:
                outcome = e
            on_done(i, outcome)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_pool_entry, s): i for i, s in enumerate(specs)}
        for f in as_completed(futures):
            exc = f.exception()
            on_done(futures[f], exc if exc is not None else f.result())
