"""The job machinery every Celery task runs inside: `guarded`.

1. a copy of an older submission, or of a job whose submission already ended (a message restored
   after its job finished, a stage left over from before `jobs retry`)  -> dropped; the job's
   record is never touched by it;
2. cancelled by the user, or stopped (a stuck earlier delivery)?  -> stop before doing anything;
3. take the job's lock in Redis. Held by a live worker  -> retry later instead of training twice;
4. count the delivery: more consecutive deliveries whose worker died than `max_attempts`
   -> a poison job (OOM, crash): fail it with the reason instead of looping forever;
5. the job id already FINISHED in MLflow  -> return the recorded result (idempotency);
   runs left RUNNING by a dead worker  -> mark them FAILED ("interrupted"), so the run history
   shows the retry; a chain stage that already completed -> its recorded output when the chain
   has not gone on from it yet (its worker died in between), else the copy is dropped;
6. run the pipeline function with a heartbeat (every `heartbeat_seconds`: renew the lock, stamp
   the record, keep the message's delivery fresh so Redis never redelivers a live job), reporting
   progress (stage, step, ETA) into the result backend and the job record, within the job's soft
   and hard time limits (enforced here: Celery's do not apply in the gpu workers' solo pool).

A broker outage while a job trains does not stop it: the heartbeat, progress reports and cancel
checks skip the beats they cannot send and catch up when Redis is back; the job's last record
updates wait for the broker (about five minutes) before giving up.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.exceptions import Ignore, Retry

from service.dist.store import JOB_OVERRIDES, TERMINAL, JobStore, submission_of
from service.errors import JobStopped, ServiceError
from service.settings import Settings

log = logging.getLogger("ftctl.worker")
STEP = re.compile(r"step (?P<step>\d+)/(?P<total>\d+)")
T = TypeVar("T")


def _transient() -> tuple[type[BaseException], ...]:
    """Errors worth an automatic retry: the broker, the tracking server or its database blinked."""
    import redis.exceptions
    import requests.exceptions
    import sqlalchemy.exc

    return (ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError, requests.exceptions.ConnectionError,
            requests.exceptions.Timeout, sqlalchemy.exc.OperationalError)


TRANSIENT: tuple[type[BaseException], ...] = _transient()


def _broker_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (ConnectionError, TimeoutError, OSError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)


BROKER_ERRORS: tuple[type[BaseException], ...] = _broker_errors()


class JobCancelled(JobStopped):
    """The user cancelled the job (`ftctl jobs cancel`)."""


class JobTimeout(JobStopped):
    """The job ran past its soft time limit (max_job_seconds)."""


class PoisonJob(JobStopped):
    """A job whose worker died on every delivery: failed for good instead of redelivered forever."""


class JobLost(JobStopped):
    """This delivery lost its job's lock to another (its own heartbeat was cut off for longer than
    the lock lives): it stops, the other delivery resumes from the last checkpoint."""


def patiently(fn: Callable[[], T], what: str, seconds: float = 300.0) -> T:
    """`fn()`, retried while the broker is unreachable (a restart), for up to `seconds`."""
    deadline, wait = time.monotonic() + seconds, 0.5
    while True:
        try:
            return fn()
        except BROKER_ERRORS as e:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: broker unreachable (%s); retrying in %.0f s", what, e, wait)
            time.sleep(wait)
            wait = min(2 * wait, 10.0)


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



class Heartbeat(threading.Thread):
    """Every `period` seconds while a job runs: renew its lock, stamp its record (`beat`), and keep
    its message's delivery fresh in the broker. A beat the broker misses is skipped; a lock taken
    over by another delivery meanwhile sets `lost` (the job must stop). Daemon: dies with us."""

    def __init__(self, store: JobStore, job_id: str, owner: str, period: int, *,
                 delivery_tag: str | None = None, record: bool = True) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id, self.owner, self.period = store, job_id, owner, period
        self.delivery_tag, self.record = delivery_tag, record
        self.stopped, self.lost = threading.Event(), False

    def beat(self) -> None:
        ttl = 3 * self.period
        # A key that is gone (it expired during a broker outage) is taken again, unless another
        # delivery took it meanwhile — then that one owns the job now.
        if not self.store.renew(self.job_id, self.owner, ttl) \
                and not self.store.acquire(self.job_id, self.owner, ttl):
            log.warning("job %s: lost its lock to %s", self.job_id, self.store.lock_owner(self.job_id))
            self.lost = True
            return
        if self.record:
            self.store.update(self.job_id, beat=time.time())
        if self.delivery_tag:
            self.store.keep_delivery(self.delivery_tag)

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            try:
                self.beat()
            except Exception as e:  # a broker blip: the next beat tries again
                log.warning("heartbeat of job %s failed: %s", self.job_id, e)
            if self.lost:
                return


class Progress:
    """The progress callback handed to pipeline functions: result backend + job record + cancel.
    Raises JobCancelled, JobTimeout or JobLost to stop the job between two steps."""

    def __init__(self, task: Any, store: JobStore, job_id: str, soft_limit: float | None = None,
                 heartbeat: Heartbeat | None = None) -> None:
        self.task, self.store, self.job_id = task, store, job_id
        self.submission = submission_of(task.request.id)
        self.t0 = time.monotonic()
        self.stage, self.stage_t0 = task.name.removeprefix("ftctl."), self.t0
        self.soft_limit, self.heartbeat = soft_limit, heartbeat
        self.unreachable_since: float | None = None

    def __call__(self, message: str, step: int | None = None, total: int | None = None) -> None:
        if self.heartbeat is not None and self.heartbeat.lost:
            raise JobLost(f"job {self.job_id}: another delivery holds its lock now; stopping here")
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
        try:
            cancelled = self.store.cancelled(self.job_id, self.submission)
            if not cancelled:
                if self.task.request.id:
                    self.task.update_state(state="PROGRESS", meta=meta)
                self.store.update(self.job_id, state="PROGRESS", message=message, progress=meta)
        except BROKER_ERRORS as e:  # keep training: the next report catches up
            if self.unreachable_since is None:
                self.unreachable_since = now
                log.warning("job %s: broker unreachable (%s); training on", self.job_id, e)
            return
        if self.unreachable_since is not None:
            log.warning("job %s: broker back after %.0f s", self.job_id, now - self.unreachable_since)
            self.unreachable_since = None
        if cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled by the user")


def _hard_limit(store: JobStore, job_id: str, submission: int, seconds: float) -> threading.Timer:
    """Past the hard limit a job is stuck (it stopped reporting progress): record why, make the
    redelivery stop at once (cancel flag), and end the process — the only way to stop a stuck
    thread in the solo pool, where Celery's own time limits do not apply."""

    def expire() -> None:
        why = (f"job {job_id} exceeded its hard time limit of {seconds:.0f} s and its worker was "
               "stopped (it stopped reporting progress: a hang). Fix the cause, then "
               f"`ftctl jobs retry {job_id}`")
        log.error(why)
        try:
            store.update(job_id, state="FAILURE", error=why, finished=time.time())
            store.stop(job_id, submission, why)
        finally:
            os._exit(70)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    return timer




def _stale(store: JobStore, job_id: str, submission: int) -> tuple[str, str] | None:
    """(why, the record's state) when this delivery belongs to no live submission; None when it
    does. A job without a record (its Redis record lost) runs: its MLflow job id still makes it
    idempotent."""
    record = store.get(job_id)
    if record is None:
        return None
    current, state = int(record.get("submissions") or 0), str(record.get("state"))
    if submission < current:
        return f"a copy of submission {submission}; the job was resubmitted ({current})", state
    if state in TERMINAL:
        return f"a copy delivered after the job ended ({state})", state
    return None


def guarded(task: Any, job_id: str, work: Callable[[Progress], dict[str, Any]],
            *, tracked: bool = True, last: bool = True) -> dict[str, Any]:
    """Run `work` at most once at a time per job id, idempotently; see the module docstring.

    tracked: look the job id up in MLflow first (finished → its result; RUNNING runs of a dead
    worker → FAILED). A staged release does that in its first stage itself. last: this task ends
    the job (record SUCCESS); a stage in the middle of a chain only reports that it is done.
    """
    app = task.app
    dist = app.ftctl_dist
    store = JobStore.for_app(app)
    submission = submission_of(task.request.id)
    stale = _stale(store, job_id, submission)
    if stale:
        why, state = stale
        if tracked and last and state == "SUCCESS":  # answer with the recorded result, read-only
            done = _finished_result(app.ftctl_settings, job_id)
            if done is not None:
                log.info("job %s: %s; returning the recorded result", job_id, why)
                return done
        log.info("job %s: dropping %s (%s)", job_id, task.request.id, why)
        raise Ignore()
    if store.cancelled(job_id, submission):
        raise JobCancelled(f"job {job_id} was cancelled by the user before it started")
    stopped = store.stopped(job_id, submission)
    if stopped:
        raise JobTimeout(f"{stopped}; not retrying it: fix the cause, then `ftctl jobs retry {job_id}`")
    owner = f"{task.request.hostname or socket.gethostname()}/{os.getpid()}/{task.request.id}"
    period = dist.heartbeat_seconds
    if not store.acquire(job_id, owner, 3 * period):
        # Another delivery holds the job (a copy of a live job): wait for it, never touching the
        # record it reports to. Bounded: longer than the holder can live (its hard limit).
        cap = (dist.max_job_seconds + dist.hard_limit_margin) // period + 1
        if task.request.retries >= cap:
            log.warning("job %s: dropping a copy; %s held the lock throughout", job_id,
                        store.lock_owner(job_id))
            raise Ignore()
        raise task.retry(countdown=period, max_retries=cap)
    if not last and store.stage_output(job_id, task.request.id) is not None:
        store.release(job_id, owner)
        if store.stage_chained(job_id, task.request.id):
            log.info("job %s: %s already completed and chained (a copy)", job_id, task.name)
            raise Ignore()
        # Completed, but its worker died before the next stage was sent: send it now.
        log.info("job %s: %s already completed; handing on its output", job_id, task.name)
        return store.stage_output(job_id, task.request.id)
    tag = (task.request.properties or {}).get("delivery_tag")
    beat = Heartbeat(store, job_id, owner, period, delivery_tag=tag)
    beat.start()
    hard = _hard_limit(store, job_id, submission, dist.max_job_seconds + dist.hard_limit_margin)
    hard.start()
    clean = False
    try:
        attempts = store.start_attempt(job_id)
        store.update(job_id, state="STARTED", worker=task.request.hostname, attempts=attempts,
                     started=time.time(), beat=time.time(), message=f"started (delivery {attempts})")
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
                store.update(job_id, state="SUCCESS", message="already finished: recorded result",
                             beat=None)
                return done
        result = work(Progress(task, store, job_id, soft_limit=dist.max_job_seconds, heartbeat=beat))
        clean = True
        if last:
            patiently(lambda: store.update(job_id, state="SUCCESS", message="finished", beat=None,
                                           finished=time.time()), f"job {job_id}")
        else:
            def handed_on() -> None:
                store.mark_stage_done(job_id, task.request.id, result)
                store.update(job_id, state="PROGRESS", beat=None,
                             message=f"{task.name.removeprefix('ftctl.')} done")
            patiently(handed_on, f"job {job_id}")
        return result
    except Retry:
        clean = True
        raise
    except JobLost:
        clean = True  # the delivery holding the lock now owns the job and its record
        raise Ignore() from None
    except Exception as e:
        clean = True  # the task ended by itself: not a worker death
        if isinstance(e, TRANSIENT) and task.request.retries < (task.max_retries or 0):
            # Celery's autoretry redelivers it: the job is not over (and must not look retryable).
            store.update(job_id, message=f"retrying after {type(e).__name__}: {e}")
            raise
        state = "CANCELLED" if isinstance(e, JobCancelled) else "FAILURE"
        store.update(job_id, state=state, error=f"{type(e).__name__}: {e}", beat=None,
                     finished=time.time())
        raise
    finally:
        beat.stopped.set()
        hard.cancel()
        try:
            if clean:
                store.end_attempt(job_id)
            if not beat.lost:
                store.release(job_id, owner)
        except BROKER_ERRORS as e:  # the lock expires by itself
            log.warning("job %s: could not release its lock (%s)", job_id, e)


def _finished_result(settings: Settings, job_id: str) -> dict[str, Any] | None:
    from service.tracking.jobs import finished_result
    from service.tracking.store import Tracker

    return finished_result(Tracker(settings), job_id)


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
