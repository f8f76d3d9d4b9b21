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
from service.pipeline.inputs import (
    Task,
    Upstream,
    job_context,
    load_or_measure_nll,
    resolve_task,
)
from service.settings import Settings
from service.tracking.jobs import end_job, finished_result, job_id_for, job_lock, start_job
from service.tracking.lineage import model_key, train_key
from service.tracking.registry import Version
from service.tracking.rows import log_row, make_row
from service.tracking.store import TAG, RunHandle


def stats_job_id(settings: Settings, task: Task, parent_version: int, digest: str) -> str:
    """A statistics job's id: the task data, the parent, the recipe and seed, the upstream set.
    In-process, sharded and remote statistics jobs all derive it here: one job, however run."""
    s = settings.replace(steps=task_steps(settings))
    cfg = finetune_config(s, s.steps, s.seed).to_dict()
    return job_id_for("stats", task=task.digest, parent=parent_version, config=cfg, digest=digest,
                      line=s.model_line)


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
                     "train_seconds": outcome.seconds, "train_steps": outcome.steps,
                     "resumed_from_step": outcome.resumed_from})


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
    parent_version: int = 0,
) -> list[dict[str, Any]]:
    """Collect a full forgetting row for each task (reusing finished jobs); results in order.
    The rows are measured on `parent_version` (0: the @champion) — an older or newer version
    of the line to study how rows age (bench/matrix_policy.py)."""
    say = progress or (lambda _m: None)
    ctx = job_context(settings, parent_version)
    tracker, registry, parent, upstream = ctx.tracker, ctx.registry, ctx.parent, ctx.upstream
    tasks = [resolve_task(settings, ref) for ref in task_refs]  # fail fast on an unknown task
    model_dir = registry.local_dir(parent)
    before = load_or_measure_nll(settings, model_key(parent), upstream, model_dir,
                                 progress=count_messages(say, "measuring the champion"))
    settings = settings.replace(steps=task_steps(settings))
    cfg = finetune_config(settings, settings.steps, settings.seed).to_dict()

    results: list[dict[str, Any] | None] = [None] * len(tasks)
    pending: list[tuple[int, str]] = []
    for i, task in enumerate(tasks):
        job_id = stats_job_id(settings, task, parent.version, upstream.digest)
        done = finished_result(tracker, job_id)
        if done is not None:
            results[i] = done
            say(f"stats {task.name}: already collected (run {done['run_id'][:8]})")
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
                    TAG + "train_key": train_key(task.digest, parent.version, cfg,
                                                      upstream.digest, settings.model_line)}
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
                    "forgetting_mean": metrics["forgetting_mean"], "seconds": outcome.seconds,
                    "resumed_from": outcome.resumed_from})
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
