"""Celery tasks: thin wrappers around the in-process pipeline functions, made safe to redeliver.

Every job task runs inside `service.dist.guard.guarded` (lock, idempotency, poison cap, time limits,
progress). A release is a chain of stage tasks (service/release/stages.py), a sharded statistics job a
fine-tune, a group of shards and a merge (service/pipeline/shards.py).

Arguments are JSON only: job ids, version numbers, task names/URIs, option dicts and the
release's versioned stage state (service/release/state.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery.worker.consumer import Consumer

from service.dist.config import ROUTES
from service.dist.guard import (
    TRANSIENT,
    JobCancelled,
    JobLost,
    JobTimeout,
    PoisonJob,
    Progress,
    guarded,
    job_settings,
    log,
    patiently,
)
from service.dist.store import JobStore, job_of, submission_of
from service.errors import ServiceError
from service.pipeline import shards as sharded
from service.pipeline.shards import shard_bounds
from service.release.state import Finished, ReleaseState, decode
from service.settings import Settings

__all__ = ["JobCancelled", "JobTimeout", "PoisonJob", "Progress", "job_of", "job_settings",
           "register", "shard_bounds"]


def release_begin(task: Any, job_id: str, request: dict[str, Any],
                  overrides: dict[str, Any]) -> dict[str, Any]:
    """cpu: open the release (job id, run) and choose method, probes and warm-up replay."""
    from service.release.request import ReleaseRequest, open_release

    settings = job_settings(task.app, overrides)
    if not isinstance(request, dict) or "task" not in request:
        raise ServiceError("bad arguments: request must be a JSON object with at least 'task'")
    try:
        req = ReleaseRequest(**request)  # its own job_id: the user's, or "" = derived like in-process
    except TypeError as e:
        raise ServiceError(f"bad arguments for ftctl.release_begin: {e}") from None

    def work(progress: Progress) -> dict[str, Any]:
        state = open_release(settings, req)
        if isinstance(state, Finished):  # this job id already finished: every stage passes it on
            return state.to_json()
        return _stage_body(settings, state, "begin", progress)

    return guarded(task, job_id, work, tracked=False, last=False)


def _stage_body(settings: Settings, state: ReleaseState, name: str, progress: Progress) -> Any:
    """Run one stage on its typed state; its output as JSON (the next stage's argument, or the
    job's result). A stage that fails for good fails the release run with the reason."""
    from service.release.request import stage_settings
    from service.release.stages import STAGES
    from service.tracking.store import Tracker

    try:
        out = dict(STAGES)[name](stage_settings(settings, state), state, progress)
    except TRANSIENT:
        raise  # Celery retries the stage with the same state; the release run stays RUNNING
    except JobLost:
        raise  # the delivery holding the job now carries on with the same release run
    except BaseException as e:
        Tracker(settings).fail(state.run_id, e)
        raise
    return out.to_json() if isinstance(out, ReleaseState) else out


def _release_stage(task: Any, data: Any, job_id: str, overrides: dict[str, Any], name: str,
                   last: bool = False) -> Any:
    settings = job_settings(task.app, overrides)
    state = decode(data, name)
    if isinstance(state, Finished):
        return state.result if last else state.to_json()
    try:
        return guarded(task, job_id, lambda progress: _stage_body(settings, state, name, progress),
                       tracked=False, last=last)
    except (JobCancelled, JobTimeout, PoisonJob) as e:  # the job ends here: so does its run
        from service.tracking.store import Tracker

        Tracker(settings).fail(state.run_id, e)
        raise


def release_warmup(task: Any, state: Any, job_id: str, overrides: dict[str, Any]) -> Any:
    """gpu: the warm-up (online) or plain fine-tune (offline, oracle) and the probes."""
    return _release_stage(task, state, job_id, overrides, "warmup")


def release_predict(task: Any, state: Any, job_id: str, overrides: dict[str, Any]) -> Any:
    """cpu: fold the probes into the completion model; sample the replay plan."""
    return _release_stage(task, state, job_id, overrides, "predict")


def release_train(task: Any, state: Any, job_id: str, overrides: dict[str, Any]) -> Any:
    """gpu: the fine-tune with the planned replay; measure and log the forgetting row."""
    return _release_stage(task, state, job_id, overrides, "train")


def release_finish(task: Any, state: Any, job_id: str, overrides: dict[str, Any]) -> Any:
    """cpu: gate, register, promote; record the outcome on the job (version, gate)."""
    result = _release_stage(task, state, job_id, overrides, "finish", last=True)
    store = JobStore.for_app(task.app)
    summary = {k: result.get(k) for k in ("version", "champion", "run_id", "reused", "task")}
    store.update(job_id, state="SUCCESS", message=f"released version {result.get('version')}"
                 + (" @champion" if result.get("champion") else ""), summary=summary,
                 finished=time.time())
    return result


RELEASE_STAGES = (release_warmup, release_predict, release_train, release_finish)
# Tasks in the middle of a chain: the next stage is sent when they succeed.
CHAIN_STAGES = frozenset({"ftctl.release_begin", "ftctl.release_warmup", "ftctl.release_predict",
                          "ftctl.release_train", "ftctl.stats_train"})


def stats_train(task: Any, job_id: str, task_ref: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """gpu: a sharded statistics job's fine-tune (its model is logged for the shards)."""
    settings = job_settings(task.app, overrides)
    return guarded(task, job_id, lambda progress: sharded.train(settings, task_ref, progress),
                   tracked=False, last=False)


def stats_shard(task: Any, state: Any, job_id: str, index: int, count: int,
                overrides: dict[str, Any]) -> dict[str, Any]:
    """gpu: before/after NLL of one slice of the upstream set (side-effect free)."""
    settings = job_settings(task.app, overrides)
    if not isinstance(state, dict) or not ({"run_id", "result"} & set(state)):
        raise ServiceError("bad arguments: ftctl.stats_shard takes the state of ftctl.stats_train")
    if JobStore.for_app(task.app).cancelled(job_id, submission_of(task.request.id)):
        raise JobCancelled(f"job {job_id} was cancelled by the user")
    return sharded.measure(settings, state, int(index), int(count))


def stats_merge(task: Any, shards: Any, job_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """cpu: the shards in order → one forgetting row in the statistics run."""
    settings = job_settings(task.app, overrides)
    if not isinstance(shards, list):
        raise ServiceError("bad arguments: ftctl.stats_merge takes the list of shard results")
    return guarded(task, job_id, lambda progress: sharded.merge(settings, shards, progress), tracked=False)


def stats(task: Any, job_id: str, task_ref: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """gpu: one statistics job — a full forgetting row for one task on the @champion."""
    from service.pipeline.stats import collect_stats

    settings = job_settings(task.app, overrides)

    def work(progress: Progress) -> dict[str, Any]:
        [result] = collect_stats(settings, [task_ref], progress=progress, workers=1)
        if "error" in result:
            raise ServiceError(result["error"])
        return result

    # collect_stats derives its own MLflow job id and reuses finished rows itself.
    return guarded(task, job_id, work, tracked=False)


def measure_shard(task: Any, job_id: str, version: int, index: int, count: int,
                  overrides: dict[str, Any]) -> dict[str, Any]:
    """gpu: NLL of one contiguous shard of the upstream set under a registered version.

    Side-effect free (the merge records the row), so a redelivered shard simply runs again.
    """
    settings = job_settings(task.app, overrides)
    if JobStore.for_app(task.app).cancelled(job_id, submission_of(task.request.id)):
        raise JobCancelled(f"job {job_id} was cancelled by the user")
    return sharded.measure_version_slice(settings, int(version), int(index), int(count))


def merge_shards(task: Any, shards: list[dict[str, Any]], job_id: str, version: int,
                 overrides: dict[str, Any]) -> dict[str, Any]:
    """cpu: merge the shards into one NLL table: an MLflow artifact + the NLL cache."""
    settings = job_settings(task.app, overrides)
    return guarded(task, job_id, lambda progress: sharded.merge_version(
        settings, shards, job_id, int(version), progress))


def diagnose(task: Any, job_id: str, seconds: float, steps: int) -> dict[str, Any]:
    """Any queue: a diagnostic job through the whole job machinery (lock, idempotency, MLflow
    run, progress) — `ftctl jobs diagnose` checks a deployment end to end without a GPU job."""
    if not isinstance(seconds, int | float) or not isinstance(steps, int) or steps < 1 or seconds < 0:
        raise ServiceError(f"bad arguments for ftctl.diagnose: seconds={seconds!r} must be a number "
                           f">= 0 and steps={steps!r} an integer >= 1")
    settings: Settings = task.app.ftctl_settings

    def work(progress: Progress) -> dict[str, Any]:
        from service.tracking.jobs import run_job
        from service.tracking.store import RunHandle, Tracker

        def body(run: RunHandle) -> dict[str, Any]:
            for i in range(steps):
                time.sleep(seconds / steps)
                progress("diagnose", step=i + 1, total=steps)
                run.log_metrics({"diagnose_step": float(i + 1)}, step=i + 1)
            return {"steps": steps, "worker": task.request.hostname, "pid": os.getpid(),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

        return run_job(Tracker(settings), kind="diagnose", job_id=job_id, name="diagnose", tags={},
                       body=body)

    return guarded(task, job_id, work)


def echo(task: Any, value: Any) -> Any:
    """cpu: returns its argument (dispatch-overhead benchmark, broker round-trip check)."""
    return value


def job_task_options(app: Any) -> dict[str, Any]:
    """How every job task is declared: late acks, requeue on a lost worker, JSON-typed arguments,
    automatic retries of transient errors with the app's retry policy."""
    return {"bind": True, "acks_late": True, "reject_on_worker_lost": True, "typing": True,
            "autoretry_for": TRANSIENT, "max_retries": app.ftctl_dist.max_retries, "retry_backoff": 5,
            "retry_backoff_max": 600, "retry_jitter": True}


def register(app: Any) -> None:
    """Register ftctl's job tasks on `app` (the beat jobs: service.dist.beat.register)."""
    job = job_task_options(app)
    for fn in (release_begin, *RELEASE_STAGES, stats, stats_train, stats_shard, stats_merge,
               measure_shard, merge_shards, diagnose):
        app.task(name=f"ftctl.{fn.__name__}", **job)(fn)
    app.task(name="ftctl.echo", bind=True)(echo)
    _connect_signals()


_SIGNALS: list[Any] = []


def _connect_signals() -> None:
    """Write failures that never reach a task body (bad args, unknown task) into the job record."""
    if _SIGNALS:
        return
    from celery import signals

    def on_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                   **_: Any) -> None:
        dist = getattr(getattr(sender, "app", None), "ftctl_dist", None)
        if dist is None or not task_id:
            return
        _record_error(sender.app, task_id, f"{type(exception).__name__}: {exception}")

    def on_success(sender: Any = None, **_: Any) -> None:
        # Sent after Celery has sent the next stage of the chain: a later copy of this stage is
        # dropped instead of sending it again (service.dist.guard).
        app, request = getattr(sender, "app", None), getattr(sender, "request", None)
        if getattr(app, "ftctl_dist", None) is None or request is None or not request.id \
                or sender.name not in CHAIN_STAGES:
            return
        try:
            patiently(lambda: JobStore.for_app(app).mark_stage_chained(job_of(request.id), request.id),
                      f"chain of {request.id}")
        except Exception as e:  # the worst case is one redundant, idempotent next stage
            log.warning("could not mark %s chained: %s", request.id, e)

    def on_unknown(sender: Any = None, name: str = "", id: str = "", **_: Any) -> None:
        app = getattr(sender, "app", None)
        if getattr(app, "ftctl_dist", None) is not None and id:
            _record_error(app, id, f"unknown task {name!r}: this worker runs ftctl "
                          f"{', '.join(sorted(ROUTES))}; upgrade the worker or fix the task name")

    signals.task_failure.connect(on_failure, weak=False)
    signals.task_success.connect(on_success, weak=False)
    signals.task_unknown.connect(on_unknown, weak=False)
    _SIGNALS.extend([on_failure, on_success, on_unknown])


def _record_error(app: Any, task_id: str, error: str) -> None:
    """A failure that never reached `guarded` (bad arguments, an unknown task, a refused message)
    fails its job — unless the job was cancelled or resubmitted since (a stale copy)."""
    try:
        store = JobStore.for_app(app)
        job_id = job_of(task_id)
        record = store.get(job_id)
        if record is None or record.get("state") == "CANCELLED" \
                or submission_of(task_id) < int(record.get("submissions") or 0):
            return
        store.update(job_id, state="FAILURE", error=error, finished=time.time())
    except Exception as e:  # recording must never take the worker down
        log.warning("could not record the failure of job %s: %s", job_of(task_id), e)


class JobConsumer(Consumer):
    """Celery's consumer, plus: a message it cannot decode (not JSON, pickle refused) fails its
    job with a clear error instead of vanishing from the job's status. The worker keeps serving."""

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        super().on_decode_error(message, exc)
        self._refused(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        super().on_invalid_task(body, message, exc)
        self._refused(message, exc)

    def _refused(self, message: Any, exc: BaseException) -> None:
        task_id = (message.headers or {}).get("id")
        if not task_id:
            return
        err = (f"message refused: {type(exc).__name__}: {exc} (content type "
               f"{message.content_type}); ftctl accepts JSON task messages only")
        try:
            from celery.exceptions import Reject

            self.app.backend.mark_as_failure(task_id, Reject(err, requeue=False))
        except Exception as e:
            log.warning("could not mark message %s failed: %s", task_id, e)
        _record_error(self.app, task_id, err)
