"""The job machinery every Celery task runs inside: `guarded`.

1. cancelled by the user, or stopped (a stuck earlier delivery)?  -> stop before doing anything;
2. take the job's lock in Redis (renewed by a heartbeat thread). Held by a live worker (Redis
   redelivered a long job's message, celery#5935)  -> retry later instead of training twice;
3. count the delivery: more consecutive deliveries whose worker died than `max_attempts`
   -> a poison job (OOM, crash): fail it with the reason instead of looping forever;
4. the job id already FINISHED in MLflow  -> return the recorded result (idempotency);
   runs left RUNNING by a dead worker  -> mark them FAILED ("interrupted"), so the run history
   shows the retry; a chain stage that already completed -> return its recorded output;
5. run the pipeline function, reporting progress (stage, step, ETA) into the result backend and
   the job record, within the job's soft and hard time limits (enforced here: Celery's do not
   apply in the solo pool of the gpu workers).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import Retry

from service.errors import ServiceError
from service.dist.store import JOB_OVERRIDES, JobStore, submission_of
from service.settings import Settings

log = logging.getLogger("ftctl.worker")
STEP = re.compile(r"step (?P<step>\d+)/(?P<total>\d+)")

def _transient() -> tuple[type[BaseException], ...]:
    """Errors worth an automatic retry: the broker, the tracking server or its database blinked."""
    import redis.exceptions
    import requests.exceptions
    import sqlalchemy.exc

    return (ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError, requests.exceptions.ConnectionError,
            requests.exceptions.Timeout, sqlalchemy.exc.OperationalError)


TRANSIENT: tuple[type[BaseException], ...] = _transient()


class JobCancelled(ServiceError):
    """The user cancelled the job (`ftctl jobs cancel`)."""


class JobTimeout(ServiceError):
    """The job ran past its soft time limit (max_job_seconds)."""


class PoisonJob(ServiceError):
    """A job whose worker died on every delivery: failed for good instead of redelivered forever."""


def job_settings(app: Any, overrides: Any) -> Settings:
    """The worker's settings with the job's per-job overrides (only the allowed keys)."""
    if not isinstance(overrides, dict):
        raise ServiceError(f"bad arguments: overrides must be a JSON object, got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - set(JOB_OVERRIDES))
    if unknown:
        raise ServiceError(f"bad arguments: settings {', '.join(unknown)} cannot be set per job; "
                           f"allowed: {', '.join(JOB_OVERRIDES)}")
    base: Settings = app.ftctl_settings
    odd = {k: v for k, v in overrides.items() if not isinstance(v, bool | int | float | str | None)}
    if odd:
        raise ServiceError(f"bad arguments: job settings must be JSON scalars, got {odd}")
    try:
        return base.replace(**overrides)  # Settings validates the values
    except (TypeError, ValueError) as e:
        raise ServiceError(f"bad arguments: job settings {overrides} are invalid ({e})") from None


class Progress:
    """The progress callback handed to pipeline functions: result backend + job record + cancel."""

    def __init__(self, task: Any, store: JobStore, job_id: str, soft_limit: float | None = None) -> None:
        self.task, self.store, self.job_id = task, store, job_id
        self.submission = submission_of(task.request.id)
        self.t0 = time.monotonic()
        self.stage, self.stage_t0 = task.name.removeprefix("ftctl."), self.t0
        self.soft_limit = soft_limit

    def __call__(self, message: str, step: int | None = None, total: int | None = None) -> None:
        if self.store.cancelled(self.job_id, self.submission):
            raise JobCancelled(f"job {self.job_id} was cancelled by the user")
        now = time.monotonic()
        if self.soft_limit is not None and now - self.t0 > self.soft_limit:
            # Celery's own time limits do not apply in the solo pool gpu workers use.
            raise JobTimeout(f"job {self.job_id} ran past its soft time limit of {self.soft_limit:.0f} s; "
                             "raise max_job_seconds ([ftctl.dist] or FTCTL_MAX_JOB_SECONDS) or "
                             "shorten the job, then `ftctl jobs retry`")
        found = STEP.search(message)  # the pipeline reports "<stage>: step 30/300, loss …"
        if step is None and found:
            step, total = int(found["step"]), int(found["total"])
            stage = message[: found.start()].rstrip(": ") or self.stage
            if stage != self.stage:
                self.stage, self.stage_t0 = stage, now
        eta = (now - self.stage_t0) / step * (total - step) if step and total else None
        meta = {"message": message, "step": step, "total": total, "eta": eta,
                "elapsed": now - self.t0, "stage": self.stage, "job_id": self.job_id}
        if self.task.request.id:
            self.task.update_state(state="PROGRESS", meta=meta)
        self.store.update(self.job_id, state="PROGRESS", message=message, progress=meta)


class Heartbeat(threading.Thread):
    """Renews the job lock every `period` seconds while the job runs (daemon: dies with us)."""

    def __init__(self, store: JobStore, job_id: str, owner: str, period: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.owner, self.period = store, job_id, owner, period
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                if not self.store.renew(self.job_id, self.owner, 3 * self.period):
                    log.warning("lost the lock of job %s", self.job_id)
            except Exception as e:  # a broker blip: the next beat retries
                log.warning("heartbeat of job %s failed: %s", self.job_id, e)


def _hard_limit(store: JobStore, job_id: str, submission: int, seconds: float) -> threading.Timer:
    """Past the hard limit a job is stuck (it stopped reporting progress): record why, make the
    redelivery stop at once (cancel flag), and end the process — the only way to stop a stuck
    thread in the solo pool, where Celery's own time limits do not apply."""

    def expire() -> None:
        why = f"job {job_id} exceeded its hard time limit of {seconds:.0f} s and its worker was stopped"
        log.error(why)
        try:
            store.update(job_id, state="FAILURE", error=why, finished=time.time())
            store.stop(job_id, submission, why)
        finally:
            os._exit(70)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    return timer


def guarded(task: Any, job_id: str, work: Callable[[Progress], dict[str, Any]],
            *, tracked: bool = True, last: bool = True) -> dict[str, Any]:
    """Run `work` at most once at a time per job id, idempotently; see the module docstring.

    tracked: look the job id up in MLflow first (finished → its result; RUNNING runs of a dead
    worker → FAILED). A staged release does that in its first stage itself. last: this task ends
    the job (record SUCCESS); a stage in the middle of a chain only reports that it is done, and a
    redelivered copy of a stage that already completed is dropped (its chain went on already).
    """
    from celery.exceptions import Ignore

    app = task.app
    dist = app.ftctl_dist
    store = JobStore.for_app(app)
    submission = submission_of(task.request.id)
    if store.cancelled(job_id, submission):
        raise JobCancelled(f"job {job_id} was cancelled by the user before it started")
    stopped = store.stopped(job_id, submission)
    if stopped:
        raise JobTimeout(f"{stopped}; not retrying it: fix the cause, then `ftctl jobs retry {job_id}`")
    owner = f"{task.request.hostname or socket.gethostname()}/{os.getpid()}/{task.request.id}"
    period = dist.heartbeat_seconds
    if not store.acquire(job_id, owner, 3 * period):
        holder = store.lock_owner(job_id)
        store.update(job_id, message=f"waiting: already running on {holder}")
        # Bounded: longer than the holder can live (its hard limit), then the copy is dropped.
        cap = (dist.max_job_seconds + dist.hard_limit_margin) // period + 1
        if task.request.retries >= cap:
            log.warning("job %s: dropping a redelivered copy; %s held the lock throughout", job_id, holder)
            raise Ignore()
        raise task.retry(countdown=period, max_retries=cap)
    done_output = None if last else store.stage_output(job_id, task.request.id)
    if done_output is not None:  # a redelivered copy of a completed stage: pass its output on
        store.release(job_id, owner)
        log.info("job %s: %s already completed (a redelivered copy)", job_id, task.name)
        return done_output
    beat = Heartbeat(store, job_id, owner, period)
    beat.start()
    hard = _hard_limit(store, job_id, submission, dist.max_job_seconds + dist.hard_limit_margin)
    hard.start()
    clean = False
    try:
        attempts = store.start_attempt(job_id)
        store.update(job_id, state="STARTED", worker=task.request.hostname, attempts=attempts,
                     started=time.time(), message=f"started (delivery {attempts})")
        if attempts > dist.max_attempts:
            clean = True
            raise PoisonJob(
                f"job {job_id} was started {attempts} times and its worker died each time (out of "
                f"memory, a crash, a preemption); not retrying it. Fix the cause, then run "
                f"`ftctl jobs retry {job_id}`")
        if tracked:
            done = _finished(app.ftctl_settings, job_id, attempts)
            if done is not None:
                clean = True
                store.update(job_id, state="SUCCESS", message="already finished: recorded result")
                return done
        result = work(Progress(task, store, job_id, soft_limit=dist.max_job_seconds))
        clean = True
        if last:
            store.update(job_id, state="SUCCESS", message="finished", finished=time.time())
        else:
            store.mark_stage_done(job_id, task.request.id, result)
            store.update(job_id, state="PROGRESS", message=f"{task.name.removeprefix('ftctl.')} done")
        return result
    except Retry:
        clean = True
        raise
    except Exception as e:
        clean = True  # the task ended by itself: not a worker death
        if isinstance(e, TRANSIENT) and task.request.retries < (task.max_retries or 0):
            # Celery's autoretry redelivers it: the job is not over (and must not look retryable).
            store.update(job_id, message=f"retrying after {type(e).__name__}: {e}")
            raise
        state = "CANCELLED" if isinstance(e, JobCancelled) else "FAILURE"
        store.update(job_id, state=state, error=f"{type(e).__name__}: {e}", finished=time.time())
        raise
    finally:
        beat.stopped.set()
        hard.cancel()
        if clean:
            store.end_attempt(job_id)
        store.release(job_id, owner)


def _finished(settings: Settings, job_id: str, attempts: int) -> dict[str, Any] | None:
    """The recorded result of a FINISHED run of this job id; marks runs of dead workers FAILED."""
    from service.tracking.jobs import finished_result
    from service.tracking.store import TAG, Tracker

    tracker = Tracker(settings)
    done = finished_result(tracker, job_id)
    if done is None:  # we hold the lock: a RUNNING run of this job belongs to a worker that died
        tracker.fail_stale({TAG + "job_id": job_id},  # the job run and its stage runs
                           f"interrupted: its worker died; retried (delivery {attempts})")
    return done
