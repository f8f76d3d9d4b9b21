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
from collections.abc import Callable, Mapping
from typing import Any

from service.tracking import TAG, RunHandle, Tracker, to_json


def job_id_for(kind: str, **parts: Any) -> str:
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


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
    done = tracker.find_job(job_id)
    if done is not None:
        result = tracker.job_result(done.info.run_id)
        return {**result, "reused": True}
    all_tags = {**tags, TAG + "role": "job", TAG + "job_id": job_id, TAG + "kind": kind}
    with tracker.run(name, tags=all_tags) as run:
        result = to_json(body(run))
        result.update({"job_id": job_id, "run_id": run.run_id, "kind": kind})
        run.log_result(result)
    return {**result, "reused": False}
