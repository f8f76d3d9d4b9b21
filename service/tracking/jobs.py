"""Jobs: an id per job and the idempotent run around it.

A job id is derived from what determines the result (kind, task data digest, parent model
version, configuration), or given by the user. Rerunning a job whose run FINISHED returns the
recorded result without recomputing; a job whose run FAILED (or died) runs again in a new run.
The failed run keeps its reason in tag ``ftctl.failure``; rows of failed runs never enter the
forgetting matrix, because the matrix reads FINISHED runs only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from service.errors import ServiceError
from service.tracking.store import TAG, RunHandle, Tracker, to_json


@contextmanager
def job_lock(settings: Any, job_id: str) -> Iterator[None]:
    """Hold this job id for this process (in-process runs; Celery tasks hold a lock in Redis):
    a second process running the same job at once would train into the same checkpoint and mark
    the first one's live run as interrupted."""
    import fcntl

    path = settings.workspace.resolve() / "locks" / f"{job_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ServiceError(f"job {job_id} is already running in another process "
                               f"({f.read().strip() or 'unknown'}); wait for it to finish") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def job_id_for(kind: str, **parts: Any) -> str:
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def check_job_inputs(tracker: Tracker, job_id: str, inputs: str, what: str) -> None:
    """A job id names one set of inputs: `inputs` is the id derived from them. Refuse a user-given
    id that an earlier run of other inputs already holds, naming both."""
    for run in tracker.find_runs({TAG + "job_id": job_id, TAG + "role": "job"}, status=None):
        theirs = run.data.tags.get(TAG + "inputs")
        if theirs and theirs != inputs:
            raise ServiceError(
                f"job id {job_id!r} already names {run.info.run_name} (run {run.info.run_id[:8]}, "
                f"inputs {theirs}); this is {what} (inputs {inputs}). Fix: give another --job-id, or "
                "none: the id is then derived from the inputs")


def finished_result(tracker: Tracker, job_id: str) -> dict[str, Any] | None:
    """The recorded result of this job id's FINISHED run (marked "reused"), if any."""
    done = tracker.find_job(job_id)
    return None if done is None else {**tracker.job_result(done.info.run_id), "reused": True}


def start_job(tracker: Tracker, *, kind: str, job_id: str, name: str,
              tags: Mapping[str, Any], inputs: str = "") -> RunHandle:
    """Open the job's run (RUNNING). Runs of this job id still RUNNING belong to a process that
    died (in-process) or to a delivery whose worker died (the Celery tasks hold the job's lock
    before they get here): they end FAILED with "interrupted", so the history shows the retry."""
    tracker.fail_stale({TAG + "job_id": job_id, TAG + "role": "job"},
                       "interrupted: the process running this job died; the job was run again")
    all_tags = {**tags, TAG + "role": "job", TAG + "job_id": job_id, TAG + "kind": kind,
                TAG + "inputs": inputs or job_id}  # the id derived from the inputs (check_job_inputs)
    return tracker.start(name, tags=all_tags)


def end_job(run: RunHandle, *, kind: str, job_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Record the job's result (what a rerun returns) and end its run FINISHED."""
    out = to_json(dict(result))
    out.update({"job_id": job_id, "run_id": run.run_id, "kind": kind})
    run.log_result(out)
    run.tracker.finish(run.run_id)
    return {**out, "reused": False}


def run_job(
    tracker: Tracker,
    *,
    kind: str,
    job_id: str,
    name: str,
    tags: Mapping[str, Any],
    body: Callable[[RunHandle], dict[str, Any]],
) -> dict[str, Any]:
    """Run `body` inside a job run unless this job id already finished; return its result."""
    done = finished_result(tracker, job_id)
    if done is not None:
        return done
    run = start_job(tracker, kind=kind, job_id=job_id, name=name, tags=tags)
    with tracker.failing(run.run_id):
        return end_job(run, kind=kind, job_id=job_id, result=body(run))
