"""The release loop: `ftctl release new-task`.

Online mode (default, one fine-tune, the study's "partition" variant)::

    champion ─► first warmup_fraction of the steps on task + random replay (then a checkpoint)
             ─► measure k probes (now vs champion) ─► complete the row (fold-in)
             ─► replay plan: budget int(|task|·r)+1, p ∝ softmax(pred/T), never held-out
             ─► the remaining steps (resumed from the checkpoint) on task + planned replay
             ─► measure held-out set + probes ─► log ─► register @candidate ─► gate ─► @champion

Offline mode: plain fine-tune → probes → predict → a second fine-tune from the champion with
the planned replay. Methods `random` (uniform replay), `none` (no replay) and `oracle` (a plain
fine-tune measures the true row, which then drives the replay) are the baselines. A plain
fine-tune that already ran with the same recipe and seed (a statistics job, a no-replay release
with --measure-all) is reused instead of trained again.

`open_release` turns a request into the first stage's typed state (service/release/state.py: job
id, run, paths); the stages themselves live in service/release/stages.py, so that this process (`release_new_task`) and the Celery
workers (one stage task per queue) run the very same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from forgetting.methods import RELEASE_METHODS, method_help
from service.errors import ServiceError
from service.pipeline.compute import finetune_config, replay_steps, task_steps
from service.pipeline.inputs import JobContext, Task, heldout_size, job_context, resolve_task
from service.pipeline.stats import log_inputs
from service.release.chain import earlier_tasks, log_test_split
from service.release.plan import log_candidates
from service.release.stages import STAGES
from service.release.state import Finished, ReleaseState
from service.settings import Settings
from service.tracking.jobs import check_job_inputs, finished_result, job_id_for, job_lock, start_job
from service.tracking.lineage import ancestry, model_key, train_key
from service.tracking.store import TAG, Tracker

# Where replay examples come from: the stored upstream set, the parent model's own samples
# (for users without the upstream data), or half of the budget each.
REPLAY_SOURCES = ("upstream", "self", "mix")


@dataclass(frozen=True)
class ReleaseRequest:
    task: str
    method: str = ""  # "" = settings.method
    mode: Literal["online", "offline"] = "online"
    name: str = ""
    steps: int = 0  # 0 = settings.steps
    job_id: str = ""
    promote: bool = True  # move @champion when the gate passes
    register: bool = True
    measure_all: bool = False  # log the whole row, not only held-out + probes
    parent_version: int = 0  # 0 = the current @champion
    seed: int | None = None
    replay_source: str = "upstream"  # upstream | self | mix (docs/replay-budget.md)

    def __post_init__(self) -> None:
        if self.replay_source not in REPLAY_SOURCES:
            raise ServiceError(f"unknown replay source {self.replay_source!r}; use "
                               f"{', '.join(REPLAY_SOURCES)}")
        if self.method and self.method not in RELEASE_METHODS:
            raise ServiceError(f"unknown method {self.method!r}; choose {method_help()}")
        if self.mode not in ("online", "offline"):
            raise ServiceError(f"unknown mode {self.mode!r}; use online or offline")


@dataclass(frozen=True)
class Recipe:
    """What a request resolves to against the settings: the method, seed and steps in force, the
    settings a job runs with, and the fine-tuning config (with the (1 + r) replay extension)."""

    method: str
    seed: int
    steps: int
    settings: Settings
    config: dict[str, Any]


def recipe(settings: Settings, req: ReleaseRequest) -> Recipe:
    method = req.method or settings.method
    seed = settings.seed if req.seed is None else req.seed
    steps = req.steps or task_steps(settings)
    settings = settings.replace(steps=steps, seed=seed)
    ratio = 0.0 if method == "none" else settings.replay_ratio
    return Recipe(method, seed, steps, settings,
                  finetune_config(settings, replay_steps(steps, ratio), seed).to_dict())


def release_job_id(settings: Settings, req: ReleaseRequest, ctx: JobContext, task: Task,
                   *, with_parent: bool = True) -> str:
    """The release's job id, derived from everything that determines its result: the task data,
    the parent version, the method and mode, the fine-tuning recipe, the replay settings and the
    upstream set. The in-process run and the distributed client derive it with this one function,
    so a release is one job (Redis record, MLflow runs, registry lineage) however it is run.

    with_parent=False gives the fingerprint of what the user asked for (the parent is where the
    @champion happened to be): a `--job-id` rerun after the champion moved is the same request,
    one for another task or method is not (`check_job_inputs`)."""
    r = recipe(settings, req)
    settings, method, cfg = r.settings, r.method, r.config
    return job_id_for(
        "release" if with_parent else "release-inputs", task=task.digest,
        parent=ctx.parent.version if with_parent else None, method=method, mode=req.mode,
        config=cfg, settings={k: getattr(settings, k) for k in
                              ("k", "replay_ratio", "temperature", "heldout_seed")}
        | {"heldout": heldout_size(settings, ctx.upstream.n)}  # the size in force, not the setting
        | ({"warmup_fraction": settings.warmup_fraction} if settings.warmup_fraction != 0.1 else {}),
        digest=ctx.upstream.digest, line=settings.model_line, measure_all=req.measure_all,
        register=req.register,
        **({"replay_source": req.replay_source, "self_tokens": settings.self_replay_tokens}
           if req.replay_source != "upstream" else {}),
        **({"earlier_share": settings.earlier_replay_share} if settings.earlier_replay_share else {}))


def open_release(settings: Settings, req: ReleaseRequest,
                 hold: Callable[[str], Any] | None = None) -> ReleaseState | Finished:
    """Resolve a release request into its first stage state — or, when this job already
    finished, its recorded result. Opens the release run (RUNNING).
    `hold(job_id)` takes the job's lock as soon as the id is known (in-process runs)."""
    ctx = job_context(settings, req.parent_version)
    tracker, registry, parent, upstream = ctx.tracker, ctx.registry, ctx.parent, ctx.upstream
    task = resolve_task(settings, req.task)
    r = recipe(settings, req)
    settings, method, seed, steps, cfg = r.settings, r.method, r.seed, r.steps, r.config
    job_id = req.job_id or release_job_id(settings, req, ctx, task)
    inputs = release_job_id(settings, req, ctx, task, with_parent=False)
    check_job_inputs(tracker, job_id, inputs, f"a release of {task.name}")
    if hold is not None:
        hold(job_id)
    done = finished_result(tracker, job_id)
    if done is not None:
        return Finished(job_id=job_id, result=done)
    model_dir = str(registry.local_dir(parent))  # before the run opens: a download can fail
    chain = ancestry(registry, parent)  # parent … base: what this release is measured against
    key = train_key(task.digest, parent.version, finetune_config(settings, steps, seed).to_dict(),
                    upstream.digest, settings.model_line)
    tags = {TAG + "task": task.name, TAG + "family": task.family, TAG + "task_digest": task.digest,
            TAG + "digest": upstream.digest, TAG + "base_version": str(parent.version),
            TAG + "method": method, TAG + "mode": req.mode,
            TAG + "replay_source": req.replay_source,
            TAG + "row": "full" if req.measure_all else "partial"}
    if method == "none":  # a plain fine-tune: its row can stand in for oracle / offline probes
        tags[TAG + "train_key"] = key
    run = start_job(tracker, kind="release", job_id=job_id, name=req.name or f"release:{task.name}",
                    tags=tags, inputs=inputs)
    config = {"settings": settings.to_dict(), "finetune": cfg,
              "release": dataclasses.asdict(req) | {"method": method}}
    with tracker.failing(run.run_id):
        run.log_params(config)
        run.log_dict(config, "config.json")
        log_inputs(run, task, upstream)
        log_test_split(run, task.test)  # later releases measure this task's retention on it
        log_candidates(run, task.train, settings.earlier_replay_candidates, seed)  # ... and replay
        earlier = earlier_tasks(tracker, chain)
    work = settings.workspace.resolve()
    return ReleaseState(
        job_id=job_id, run_id=run.run_id, task_ref=req.task, task_name=task.name,
        task_digest=task.digest, method=method, mode=req.mode, seed=seed, steps=steps,
        parent_version=parent.version, model_dir=model_dir, model_key=model_key(parent),
        train_key=key, digest=upstream.digest, measure_all=req.measure_all, register=req.register,
        replay_source=req.replay_source, base_version=chain[-1].version,
        base_key=model_key(chain[-1]), earlier=earlier,
        promote=req.promote, save_dir=str(work / "models" / run.run_id),
        ckpt_dir=str(work / "checkpoints" / job_id), started=time.time())


def stage_settings(settings: Settings, state: ReleaseState) -> Settings:
    """The settings a stage runs with: the job's steps and seed on top of the caller's."""
    return settings.replace(steps=state.steps, seed=state.seed)


def release_new_task(settings: Settings, req: ReleaseRequest,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole release in this process: the stages of service/release/stages.py, in order."""
    say = progress or (lambda _m: None)
    with contextlib.ExitStack() as held:  # the job's lock, from its id to its recorded result
        state = open_release(settings, req,
                             hold=lambda job_id: held.enter_context(job_lock(settings, job_id)))
        if isinstance(state, Finished):
            return state.result
        say(f"release {state.task_name}: method {state.method}, mode {state.mode}, from "
            f"version {state.parent_version}")
        s = stage_settings(settings, state)
        out: Any = state
        with Tracker(settings).failing(state.run_id):
            for _name, stage in STAGES:
                out = stage(s, out, say)
        return out
