"""Statistics jobs: fine-tune the champion on a task without replay and measure every upstream
example — one full row of the forgetting matrix per task. This is what grows the matrix.

Usage (what `ftctl stats collect` calls)::

    results = collect_stats(settings, ["wn_noun_food", "translate_deu"], progress=print)
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.pipeline.compute import (
    TrainOutcome,
    TrainSpec,
    count_messages,
    finetune_config,
    run_parallel,
    step_messages,
    task_steps,
)
from service.pipeline.inputs import Task, Upstream, load_or_measure_nll, load_upstream, resolve_task
from service.settings import Settings
from service.tracking.jobs import end_job, job_id_for, job_lock, start_job
from service.tracking.registry import Registry, Version
from service.tracking.rows import log_row, make_row
from service.tracking.store import TAG, RunHandle, Tracker


def model_key(settings: Settings, version: Version) -> str:
    """Cache key of a version's upstream NLLs: its registering run, unique across lines."""
    return f"run-{version.run_id}"


def check_digest(settings: Settings, parent: Version, upstream: Upstream) -> None:
    """Rows are comparable only within one upstream set: refuse to mix digests."""
    line_digest = parent.tags.get(TAG + "digest")
    if line_digest and line_digest != upstream.digest:
        raise ServiceError(
            f"model line {settings.model_line!r} version {parent.version} was measured on upstream "
            f"set {line_digest[:12]} but world {settings.world!r} has {upstream.digest[:12]}; use "
            "the world the line was initialised with, or start a new line with --model-line")


def train_key(settings: Settings, task: Task, parent: Version, upstream: Upstream) -> str:
    """Identity of a plain (no-replay) fine-tune of `task` from `parent` with the settings' recipe
    and seed: statistics jobs and no-replay releases with the same key trained the same model."""
    cfg = finetune_config(settings, settings.steps or task_steps(settings), settings.seed).to_dict()
    return job_id_for("train", task=task.digest, parent=parent.version, config=cfg,
                      digest=upstream.digest, line=settings.model_line)


def plain_row(tracker: Tracker, key: str, upstream: Upstream) -> tuple[np.ndarray, str] | None:
    """ΔNLL of every upstream example after a finished plain fine-tune with this train key (a
    statistics job, or a no-replay release that measured everything), with its run id."""
    runs = [r for r in tracker.find_runs({TAG + "train_key": key, TAG + "role": "job"})
            if r.data.tags.get(TAG + "row") == "full"
            and r.data.tags.get(TAG + "digest") == upstream.digest]
    if not runs:
        return None
    df = tracker.load_row(runs[-1].info.run_id).set_index("example_id")
    if not set(upstream.ids) <= set(df.index):
        return None
    return df.loc[upstream.ids, "delta"].to_numpy(np.float64), runs[-1].info.run_id


def stats_tags(task: Task, upstream: Upstream, parent: Version, job_kind: str = "stats") -> dict[str, str]:
    return {
        TAG + "task": task.name, TAG + "family": task.family, TAG + "task_digest": task.digest,
        TAG + "digest": upstream.digest, TAG + "base_version": str(parent.version),
        TAG + "method": "none", TAG + "row": "full", TAG + "kind_detail": job_kind,
    }


def log_training(run: RunHandle, outcome: TrainOutcome) -> None:
    for rec in outcome.history:
        step = int(rec.get("step", 0))
        run.log_metrics({k: v for k, v in rec.items() if k != "step"}, step=step)
    run.log_metrics({"task_loss_before": outcome.test_before, "task_loss_after": outcome.test_after,
                     "train_seconds": outcome.seconds, "train_steps": outcome.steps})


def log_inputs(run: RunHandle, task: Task, upstream: Upstream) -> None:
    import pandas as pd

    run.log_input(pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources}),
                  name="upstream", digest=upstream.digest, context="upstream")
    run.log_input(pd.DataFrame({"example_id": [e.id for e in task.train]}),
                  name=task.name, digest=task.digest, context="train")


def collect_stats(
    settings: Settings,
    task_refs: Sequence[str],
    *,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Collect a full forgetting row for each task (reusing finished jobs); results in order."""
    say = progress or (lambda _m: None)
    tracker = Tracker(settings)
    registry = Registry(tracker)
    parent = registry.champion()
    upstream = load_upstream(settings)
    check_digest(settings, parent, upstream)
    tasks = [resolve_task(settings, ref) for ref in task_refs]  # fail fast on an unknown task
    model_dir = registry.local_dir(parent)
    before = load_or_measure_nll(settings, model_key(settings, parent), upstream, model_dir,
                                 progress=count_messages(say, "measuring the champion"))
    settings = settings.replace(steps=task_steps(settings))
    cfg = finetune_config(settings, settings.steps, settings.seed).to_dict()

    results: list[dict[str, Any] | None] = [None] * len(tasks)
    pending: list[tuple[int, str]] = []
    for i, task in enumerate(tasks):
        job_id = job_id_for("stats", task=task.digest, parent=parent.version, config=cfg,
                            digest=upstream.digest, line=settings.model_line)
        done = tracker.find_job(job_id)
        if done is not None:
            results[i] = {**tracker.job_result(done.info.run_id), "reused": True}
            say(f"stats {task.name}: already collected (run {done.info.run_id[:8]})")
        else:
            pending.append((i, job_id))

    with contextlib.ExitStack() as held:  # each pending job's lock while its row is being made
        pending = [(i, job_id) for i, job_id in pending
                   if _lock(held, settings, job_id, tasks[i].name, results, i, say)]
        ckpt = settings.workspace.resolve() / "checkpoints"  # a dead job resumes its fine-tune
        specs = [TrainSpec(settings=settings, task_ref=task_refs[i], model_dir=str(model_dir),
                           steps=settings.steps, measure=np.arange(upstream.n), seed=settings.seed,
                           num_threads=1 if (workers or settings.workers) > 1 else None,
                           checkpoint_dir=str(ckpt / job_id),
                           checkpoint_every=max(1, settings.steps // 10))
                 for i, job_id in pending]
        # Every job's run opens before its fine-tune (RUNNING while it trains; a process that dies
        # leaves it RUNNING, and the next attempt of the job marks it interrupted).
        runs: dict[int, RunHandle] = {}
        for j, (i, job_id) in enumerate(pending):
            task = tasks[i]
            tags = {**stats_tags(task, upstream, parent),
                    TAG + "train_key": train_key(settings, task, parent, upstream)}
            runs[j] = start_job(tracker, kind="stats", job_id=job_id, name=f"stats:{task.name}", tags=tags)
            runs[j].log_params({"settings": settings.to_dict(), "finetune": cfg, "task": task.name})
            log_inputs(runs[j], task, upstream)

        def on_done(j: int, outcome: TrainOutcome | BaseException) -> None:
            i, job_id = pending[j]
            task, run = tasks[i], runs[j]
            try:
                if isinstance(outcome, BaseException):
                    raise ServiceError(f"statistics job for {task.name} failed: {outcome}")
                log_training(run, outcome)
                row = make_row(upstream.ids, upstream.sources, before, outcome.nll_after,
                               heldout=upstream.heldout)
                metrics = log_row(run, row, upstream.texts, title=f"stats: {task.name}")
                results[i] = end_job(run, kind="stats", job_id=job_id, result={
                    "task": task.name, "family": task.family, "base_version": parent.version,
                    "task_loss_before": outcome.test_before, "task_loss_after": outcome.test_after,
                    "forgetting_mean": metrics["forgetting_mean"], "seconds": outcome.seconds})
                shutil.rmtree(ckpt / job_id, ignore_errors=True)  # recorded: the checkpoint is spent
                say(f"stats {task.name}: mean ΔNLL {metrics['forgetting_mean']:+.4f}, "
                    f"task loss {outcome.test_before:.3f} → {outcome.test_after:.3f}")
            except Exception as e:
                tracker.fail(run.run_id, e)
                results[i] = {"task": task.name, "error": str(e)}
                say(f"stats {task.name}: FAILED ({e})")

        if specs:
            n = workers or settings.workers
            say(f"collecting {len(specs)} statistics rows × {upstream.n} upstream examples "
                f"with {min(n, len(specs))} worker process(es)")
            try:
                run_parallel(specs, n, on_done,
                             progress=lambda j: step_messages(say, f"stats {tasks[pending[j][0]].name}"))
            except BaseException as e:  # interrupted (Ctrl-C, a cancelled remote job): no run dangles
                for j, run in runs.items():
                    if results[pending[j][0]] is None:
                        tracker.fail(run.run_id, e)
                raise
    return [r for r in results if r is not None]


def _lock(held: contextlib.ExitStack, settings: Settings, job_id: str, task: str,
          results: list[Any], i: int, say: Callable[[str], None]) -> bool:
    """Take a job's lock into `held`; a job another process is running is reported, not run."""
    try:
        held.enter_context(job_lock(settings, job_id))
        return True
    except ServiceError as e:
        results[i] = {"task": task, "error": str(e)}
        say(f"stats {task}: skipped ({e})")
        return False
