"""A statistics job whose measurement is split across GPU workers: train → shards → merge.

    train   gpu  open the statistics run, fine-tune the champion on the task, log the model
    shard   gpu  × n: NLL of one contiguous slice of the upstream set, before (the champion)
                 and after (the fine-tuned model) — no shared state, so any worker takes any slice
    merge   cpu  the slices in order → one forgetting row, logged like `collect_stats` logs it

Measuring N upstream examples dominates a statistics job on a large upstream set (the study's
141,871 examples), and it parallelises perfectly. The run is the same MLflow job (same job id,
tags, row artifact) as an in-process `collect_stats`, so the matrix cannot tell them apart and a
finished one is reused by either. Celery tasks wrap these functions (service/dist/tasks.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.pipeline.compute import (
    TrainSpec,
    finetune_config,
    step_messages,
    task_steps,
    train_and_measure,
)
from service.pipeline.inputs import load_upstream, resolve_task
from service.pipeline.stats import check_digest, log_inputs, log_training, stats_tags, train_key
from service.settings import Settings
from service.tracking.jobs import end_job, finished_result, job_id_for, start_job
from service.tracking.registry import Registry
from service.tracking.rows import log_row, make_row
from service.tracking.store import TAG, Tracker

Say = Callable[[str], None]


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over n columns: contiguous, sizes differ by <= 1."""
    if not 0 <= index < count:
        raise ServiceError(f"bad arguments: shard {index} of {count} does not exist")
    return index * n // count, (index + 1) * n // count


def train(settings: Settings, task_ref: str, say: Say = lambda _m: None) -> dict[str, Any]:
    """gpu: the statistics fine-tune; its model goes to the run's artifacts for the shards."""
    tracker = Tracker(settings)
    registry = Registry(tracker)
    parent = registry.champion()
    upstream = load_upstream(settings)
    check_digest(settings, parent, upstream)
    task = resolve_task(settings, task_ref)
    s = settings.replace(steps=task_steps(settings))
    cfg = finetune_config(s, s.steps, s.seed).to_dict()
    job_id = job_id_for("stats", task=task.digest, parent=parent.version, config=cfg,
                        digest=upstream.digest, line=s.model_line)  # the in-process job id
    done = finished_result(tracker, job_id)
    if done is not None:
        return {"job_id": job_id, "result": done}
    run = start_job(tracker, kind="stats", job_id=job_id, name=f"stats:{task.name}",
                    tags={**stats_tags(task, upstream, parent), TAG + "sharded": "true",
                          TAG + "train_key": train_key(s, task, parent, upstream)})
    try:
        run.log_params({"settings": s.to_dict(), "finetune": cfg, "task": task.name})
        log_inputs(run, task, upstream)
        save = str(s.workspace.resolve() / "models" / run.run_id)
        out = train_and_measure(
            TrainSpec(settings=s, task_ref=task_ref, model_dir=str(registry.local_dir(parent)),
                      steps=s.steps, measure=np.zeros(0, int), seed=s.seed, save_dir=save,
                      checkpoint_dir=str(s.workspace.resolve() / "checkpoints" / job_id),
                      checkpoint_every=max(1, s.steps // 10)),
            progress=step_messages(say, f"stats {task.name}"))
        log_training(run, out)
        run.log_artifacts(Path(save), "model")
    except BaseException as e:
        tracker.fail(run.run_id, e)
        raise
    return {"job_id": job_id, "run_id": run.run_id, "task_ref": task_ref, "task": task.name,
            "family": task.family, "parent_version": parent.version, "digest": upstream.digest,
            "task_loss_before": out.test_before, "task_loss_after": out.test_after,
            "seconds": out.seconds}


def measure(settings: Settings, state: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """gpu: before/after NLL of slice `index` of `count` (side-effect free: a redelivery reruns)."""
    if "result" in state:
        return {"state": state, "index": index, "reused": True}
    from training.model import load_model
    from training.nll import measure_nll

    tracker = Tracker(settings)
    registry = Registry(tracker)
    upstream = load_upstream(settings)
    if upstream.digest != state["digest"]:
        raise ServiceError(f"this worker's upstream set is {upstream.digest[:12]}, the job's "
                           f"{state['digest'][:12]}: deploy one world on every worker")
    lo, hi = shard_bounds(upstream.n, int(index), int(count))
    examples = upstream.examples[lo:hi]
    parent, tok = load_model(registry.local_dir(registry.get(int(state["parent_version"]))))
    before = measure_nll(parent, tok, examples)
    local = settings.cache_dir / "models" / f"stats-{state['run_id']}"
    if not local.exists():  # fetched once per worker machine, into a private folder first
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=local.parent, prefix=".partial-"))
        got = Path(tracker.client.download_artifacts(state["run_id"], "model", str(tmp)))
        try:
            got.rename(local)
        except OSError:  # another shard on this machine was faster
            shutil.rmtree(tmp, ignore_errors=True)
    model, tok = load_model(local)
    after = measure_nll(model, tok, examples)
    return {"state": state, "index": index, "start": lo, "stop": hi, "digest": upstream.digest,
            "before": [float(x) for x in before], "after": [float(x) for x in after]}


def merge(settings: Settings, shards: list[dict[str, Any]], say: Say = lambda _m: None) -> dict[str, Any]:
    """cpu: the slices in order → the task's forgetting row; ends the statistics run."""
    if not shards or not all(isinstance(x, dict) and "state" in x for x in shards):
        raise ServiceError("bad arguments: merge takes the list of shard results")
    state = shards[0]["state"]
    if "result" in state:
        return state["result"]
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    before, after = np.full(upstream.n, np.nan), np.full(upstream.n, np.nan)
    try:
        for sh in sorted(shards, key=lambda x: x["start"]):
            if sh["digest"] != upstream.digest:
                raise ServiceError(f"shard {sh['index']} was measured on upstream set "
                                   f"{sh['digest'][:12]}, this worker has {upstream.digest[:12]}")
            before[sh["start"]:sh["stop"]] = sh["before"]
            after[sh["start"]:sh["stop"]] = sh["after"]
        if np.isnan(after).any():
            raise ServiceError(f"the shards cover {int((~np.isnan(after)).sum())} of {upstream.n} "
                               "upstream examples; resubmit the job")
        say(f"merged {len(shards)} shards into one row of {upstream.n} examples")
        run = tracker.attach(state["run_id"])
        row = make_row(upstream.ids, upstream.sources, before, after, heldout=upstream.heldout)
        metrics = log_row(run, row, upstream.texts, title=f"stats: {state['task']}")
        run.log_metrics({"shards": float(len(shards))})
    except BaseException as e:
        tracker.fail(state["run_id"], e)
        raise
    for spent in (settings.workspace.resolve() / "checkpoints" / state["job_id"],
                  settings.workspace.resolve() / "models" / state["run_id"]):
        shutil.rmtree(spent, ignore_errors=True)
    return end_job(run, kind="stats", job_id=state["job_id"], result={
        "task": state["task"], "family": state["family"], "base_version": state["parent_version"],
        "task_loss_before": state["task_loss_before"], "task_loss_after": state["task_loss_after"],
        "forgetting_mean": metrics["forgetting_mean"], "seconds": state["seconds"],
        "shards": len(shards)})
