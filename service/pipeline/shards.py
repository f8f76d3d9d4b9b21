"""Measurement split across GPU workers: shards of the upstream set → one merge. One pipeline
for both jobs that need it:

    statistics job (`ftctl stats collect --remote --shards N`)
      train   gpu  open the statistics run, fine-tune the champion on the task, log the model
      shard   gpu  × n: NLL of one slice under the champion ("before") and the fine-tuned model
                   ("after") — no shared state, so any worker takes any slice
      merge   cpu  the slices in order → one forgetting row, logged like `collect_stats` logs it
    measure job (`ftctl jobs measure`)
      shard   gpu  × n: NLL of one slice under a registered version ("nll")
      merge   cpu  the slices in order → an NLL table in a "measure" run + the NLL cache

Measuring N upstream examples dominates a statistics job on a large upstream set (the study's
141,871 examples), and it parallelises perfectly. A sharded statistics run is the same MLflow job
(same job id, tags, row artifact) as an in-process `collect_stats`, so the matrix cannot tell them
apart and a finished one is reused by either. Celery tasks wrap these functions (service/dist/tasks.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path
from service.errors import ServiceError
from service.pipeline.compute import (
    TrainSpec,
    finetune_config,
    step_messages,
    task_steps,
    train_and_measure,
)
from service.pipeline.inputs import (
    Upstream,
    encoding,
    job_context,
    load_model_for,
    load_upstream,
    nll_cache,
    resolve_task,
)
from service.pipeline.stats import log_inputs, log_training, stats_job_id, stats_tags
from service.settings import Settings
from service.tracking.jobs import end_job, finished_result, run_job, start_job
from service.tracking.lineage import model_key, train_key
from service.tracking.registry import Registry
from service.tracking.rows import log_row, make_row
from service.tracking.store import TAG, Tracker

Say = Callable[[str], None]


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over n columns: contiguous, sizes differ by <= 1."""
    if not 0 <= index < count:
        raise ServiceError(f"bad arguments: shard {index} of {count} does not exist")
    return index * n // count, (index + 1) * n // count


# -- the generic halves: one slice measured under named models; slices merged back ------------

def measure_slice(settings: Settings, upstream: Upstream, models: Mapping[str, Path], index: int,
                  count: int) -> dict[str, Any]:
    """gpu: NLL of slice `index` of `count` under each named model directory, in the line's
    encoding (side-effect free: a redelivered shard simply runs again). JSON-ready: it travels
    as a Celery result."""
    from training.nll import measure_nll

    lo, hi = shard_bounds(upstream.n, int(index), int(count))
    values = {}
    options = encoding(settings).nll_options()
    for name, model_dir in models.items():
        model, tok = load_model_for(settings, model_dir)
        values[name] = [float(x) for x in measure_nll(model, tok, upstream.examples[lo:hi], **options)]
    return {"index": int(index), "start": lo, "stop": hi, "digest": upstream.digest, "values": values}


def merge_slices(upstream: Upstream, shards: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """cpu: the slices in order → one full column vector per named model; refuses slices of
    another upstream set and a merge that leaves a gap."""
    if not shards or not all(isinstance(x, dict) and "values" in x for x in shards):
        raise ServiceError("bad arguments: merge takes the list of shard results")
    out = {name: np.full(upstream.n, np.nan) for name in shards[0]["values"]}
    for sh in sorted(shards, key=lambda x: x["start"]):
        if sh["digest"] != upstream.digest:
            raise ServiceError(f"shard {sh['index']} was measured on upstream set {sh['digest'][:12]}, "
                               f"this worker has {upstream.digest[:12]}; deploy one upstream set "
                               "on every worker")
        for name, vals in sh["values"].items():
            out[name][sh["start"]:sh["stop"]] = vals
    for vec in out.values():
        if np.isnan(vec).any():
            raise ServiceError(f"the shards cover {int((~np.isnan(vec)).sum())} of {upstream.n} "
                               "upstream examples; resubmit the job")
    return out


# -- statistics job: train → shards (before, after) → merge into the task's row ---------------

def train(settings: Settings, task_ref: str, say: Say = lambda _m: None) -> dict[str, Any]:
    """gpu: the statistics fine-tune; its model goes to the run's artifacts for the shards."""
    ctx = job_context(settings)
    tracker, registry, parent, upstream = ctx.tracker, ctx.registry, ctx.parent, ctx.upstream
    task = resolve_task(settings, task_ref)
    s = settings.replace(steps=task_steps(settings))
    cfg = finetune_config(s, s.steps, s.seed).to_dict()
    job_id = stats_job_id(settings, task, parent.version, upstream.digest)  # the in-process id
    done = finished_result(tracker, job_id)
    if done is not None:
        return {"job_id": job_id, "result": done}
    run = start_job(tracker, kind="stats", job_id=job_id, name=f"stats:{task.name}",
                    tags={**stats_tags(task, upstream, parent), TAG + "sharded": "true",
                          TAG + "train_key": train_key(task.digest, parent.version, cfg,
                                                       upstream.digest, s.model_line)})
    with tracker.failing(run.run_id):
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
    return {"job_id": job_id, "run_id": run.run_id, "task_ref": task_ref, "task": task.name,
            "family": task.family, "parent_version": parent.version, "digest": upstream.digest,
            "task_loss_before": out.test_before, "task_loss_after": out.test_after,
            "seconds": out.seconds}


def measure(settings: Settings, state: dict[str, Any], index: int, count: int) -> dict[str, Any]:
    """gpu: before/after NLL of slice `index` of `count` of a statistics job."""
    if "result" in state:
        return {"state": state, "index": index, "values": {}, "reused": True}
    tracker = Tracker(settings)
    registry = Registry(tracker)
    upstream = load_upstream(settings)
    if upstream.digest != state["digest"]:
        raise ServiceError(f"this worker's upstream set is {upstream.digest[:12]}, the job's "
                           f"{state['digest'][:12]}: deploy one upstream set on every worker")
    local = settings.cache_dir / "models" / f"stats-{state['run_id']}"
    if not local.exists():  # fetched once per worker machine; another shard may be faster
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=local.parent, prefix=".download-") as dl:
            got = Path(tracker.client.download_artifacts(state["run_id"], "model", dl))
            with atomic_path(local, keep_existing=True) as tmp:
                got.rename(tmp)
    parent = registry.local_dir(registry.get(int(state["parent_version"])))
    return {"state": state, **measure_slice(settings, upstream, {"before": parent, "after": local}, index, count)}


def merge(settings: Settings, shards: list[dict[str, Any]], say: Say = lambda _m: None) -> dict[str, Any]:
    """cpu: the slices in order → the task's forgetting row; ends the statistics run."""
    if not shards or not all(isinstance(x, dict) and "state" in x for x in shards):
        raise ServiceError("bad arguments: merge takes the list of shard results")
    state = shards[0]["state"]
    if "result" in state:
        return state["result"]
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    run = tracker.attach(state["run_id"])
    with tracker.failing(state["run_id"]):
        nll = merge_slices(upstream, shards)
        say(f"merged {len(shards)} shards into one row of {upstream.n} examples")
        row = make_row(upstream.ids, upstream.sources, nll["before"], nll["after"],
                       heldout=upstream.heldout)
        metrics = log_row(run, row, upstream.texts, title=f"stats: {state['task']}")
        run.log_metrics({"shards": float(len(shards))})
    for spent in (settings.workspace.resolve() / "checkpoints" / state["job_id"],
                  settings.workspace.resolve() / "models" / state["run_id"]):
        shutil.rmtree(spent, ignore_errors=True)
    return end_job(run, kind="stats", job_id=state["job_id"], result={
        "task": state["task"], "family": state["family"], "base_version": state["parent_version"],
        "task_loss_before": state["task_loss_before"], "task_loss_after": state["task_loss_after"],
        "forgetting_mean": metrics["forgetting_mean"], "seconds": state["seconds"],
        "shards": len(shards)})


# -- measure job: shards (nll) → merge into an NLL table and the NLL cache ----------------------

def measure_version_slice(settings: Settings, version: int, index: int, count: int) -> dict[str, Any]:
    """gpu: NLL of slice `index` of `count` under a registered version."""
    registry = Registry(Tracker(settings))
    model_dir = registry.local_dir(registry.get(int(version)))
    return measure_slice(settings, load_upstream(settings), {"nll": model_dir}, index, count)


def merge_version(settings: Settings, shards: list[dict[str, Any]], job_id: str, version: int,
                  say: Say = lambda _m: None) -> dict[str, Any]:
    """cpu: the slices → an NLL table in a "measure" job run, and the version's NLL cache (so the
    next job built on this version measures nothing)."""
    import pandas as pd

    upstream = load_upstream(settings)
    nll = merge_slices(upstream, shards)["nll"]
    say(f"merged {len(shards)} shards into {upstream.n} NLLs")
    tracker = Tracker(settings)
    v = Registry(tracker).get(version)

    def body(run: Any) -> dict[str, Any]:
        df = pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources, "nll": nll})
        run.log_dataframe(df, "nll/upstream.parquet")
        run.log_metrics({"nll_mean": float(nll.mean()), "shards": float(len(shards))})
        nll_cache(settings, model_key(v), upstream).put(upstream.ids, nll)
        return {"version": version, "n": upstream.n, "shards": len(shards),
                "nll_mean": float(nll.mean())}

    tags = {TAG + "digest": upstream.digest, TAG + "base_version": str(version)}
    return run_job(tracker, kind="measure", job_id=job_id, name=f"measure:v{version}", tags=tags,
                   body=body)
