"""Scheduled continual fine-tuning: the beat schedule and the jobs it triggers.

Usage::

    ftctl inbox add data/new_task.jsonl       # or drop the file into <workspace>/inbox/
    ftctl inbox add wn_noun_food --method mf  # an embedded task: a small pointer file
    ftctl scheduler                           # Celery beat — run exactly ONE (docs/operations.md)

Schedules (cron expressions or seconds, `FTCTL_SCHEDULE_*`; "off" disables one):

- inbox (`*/5 * * * *`): the oldest ready item becomes a release from the current @champion;
  one at a time — the next item waits until the previous release has ended;
- stats (`17 * * * *`): when the gpu queue is idle, statistics jobs for tasks that have no full
  row on the @champion yet, to keep growing the forgetting matrix;
- refit (`30 3 * * *`): refit the completion model on the current matrix and snapshot it.

The inbox folder itself is service/dist/inbox.py; the one-scheduler lock is in app.run_scheduler.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from service.dist.client import RemoteJobs
from service.dist.inbox import Inbox
from service.dist.store import TERMINAL, JobStore
from service.errors import ServiceError


def parse_schedule(expr: str) -> Any:
    """A 5-field cron expression (minute hour day month weekday) or a number of seconds; None
    for "off"/""."""
    from celery.schedules import crontab

    text = str(expr).strip()
    if text.lower() in ("", "off", "none", "never"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        parts = text.split()
        if len(parts) != 5:
            raise ServiceError(f"schedule {expr!r} is neither seconds nor a 5-field cron expression "
                               "(minute hour day month weekday), e.g. '*/5 * * * *'") from None
        try:
            return crontab(minute=parts[0], hour=parts[1], day_of_month=parts[2],
                           month_of_year=parts[3], day_of_week=parts[4])
        except ValueError as e:
            raise ServiceError(f"schedule {expr!r} is not a valid cron expression ({e})") from None
    if seconds <= 0:
        raise ServiceError(f"schedule {expr!r}: a period in seconds must be > 0")
    return timedelta(seconds=seconds)


def beat_schedule(dist: Any) -> dict[str, dict[str, Any]]:
    """Celery's beat_schedule from the DistConfig; each tick expires instead of piling up."""
    out: dict[str, dict[str, Any]] = {}
    for name, expr, task in (("inbox", dist.schedule_inbox, "ftctl.inbox_scan"),
                             ("stats", dist.schedule_stats, "ftctl.stats_when_idle"),
                             ("refit", dist.schedule_refit, "ftctl.refit")):
        sched = parse_schedule(expr)
        if sched is not None:
            out[f"ftctl-{name}"] = {"task": task, "schedule": sched,
                                    "options": {"queue": dist.queue("cpu"), "expires": 3600}}
    return out


# -- beat-triggered tasks (registered by service.tasks.register; they run on the cpu queue) ----

def inbox_scan(task: Any) -> dict[str, Any]:
    """Turn the oldest ready inbox item into a release — one at a time, from the @champion."""
    from service.release.request import ReleaseRequest

    app = task.app
    settings, dist = app.ftctl_settings, app.ftctl_dist
    store = JobStore.for_app(app)
    owner = f"{task.request.id}"
    if not store.acquire("inbox-scan", owner, 600):
        return {"action": "skipped", "reason": "another inbox scan is running"}
    try:
        inbox = Inbox.of(settings, dist).ensure()
        jobs = RemoteJobs(settings, app)
        key = store.key("inbox-current")
        raw = store.r.get(key)
        if raw:
            current = json.loads(raw)
            j = jobs.show(current["job_id"])
            if j["state"] not in TERMINAL:
                return {"action": "waiting", "job_id": current["job_id"], "state": j["state"]}
            ok = j["state"] == "SUCCESS"
            note = json.dumps(j.get("result"), default=str) if ok else str(j.get("error"))
            inbox.finish(Path(current["item"]), ok, note)
            store.r.delete(key)
        items = inbox.ready()
        if not items:
            return {"action": "idle"}
        item = inbox.claim(items[0])
        try:
            spec = Inbox.request_for(item)
            req = ReleaseRequest(task=spec["task"], method=spec.get("method", ""),
                                 mode=spec.get("mode", "online"), name=f"inbox:{item.name}")
            job = jobs.submit_release(req)
        except ServiceError as e:
            inbox.finish(item, False, str(e))
            return {"action": "rejected", "item": item.name, "error": str(e)}
        store.r.set(key, json.dumps({"job_id": job["job_id"], "item": str(item)}))
        return {"action": "submitted", "item": item.name, "job_id": job["job_id"]}
    finally:
        store.release("inbox-scan", owner)


def stats_when_idle(task: Any) -> dict[str, Any]:
    """Queue statistics jobs, if the gpu is idle: first every catalogue task with no row on the
    @champion's lineage (the matrix grows), then the refresh policy's rows due on this champion
    (`stats_refresh` of them measured on it, the stalest first; every row once most of this
    champion's releases, at least 2, flagged its matrix stale; docs/chains.md)."""
    from forgetting.staleness import stalest_first
    from service.pipeline.inputs import catalogue, load_upstream
    from service.tracking.lineage import ancestry
    from service.tracking.registry import Registry
    from service.tracking.store import TAG, Tracker

    app = task.app
    settings, dist = app.ftctl_settings, app.ftctl_dist
    store = JobStore.for_app(app)
    queued = store.queue_length(dist.queue("gpu"))
    busy = [i for i in store.ids(200)
            if (r := store.get(i)) and r.get("queue") == dist.queue("gpu") and r.get("state") not in TERMINAL]
    if queued or busy:
        return {"action": "skipped", "reason": f"gpu queue busy ({queued} queued, {len(busy)} open jobs)"}
    tracker = Tracker(settings)
    registry = Registry(tracker)
    champion = registry.champion()
    depth = {str(v.version): i for i, v in enumerate(ancestry(registry, champion))}
    upstream = load_upstream(settings)
    names = set(catalogue(settings))
    age: dict[str, int] = {}  # task -> promotions since its nearest row was measured
    cost: dict[str, float] = {}
    for r in tracker.find_runs({TAG + "kind": "stats", TAG + "row": "full",
                                TAG + "digest": upstream.digest, TAG + "role": "job"}):
        t, d = r.data.tags.get(TAG + "task"), depth.get(r.data.tags.get(TAG + "base_version", ""))
        if t in names and d is not None and d <= age.get(t, d):
            age[t] = d
            cost[t] = float(r.data.metrics.get("train_seconds", 0.0))
    missing = sorted(names - set(age))
    own = sum(d == 0 for d in age.values())
    # Releases from this champion whose matrix check said stale (rows predicting their probes no
    # better than example means): when at least 2 and most of its checked releases say so, every
    # row is due on it. One flag is not enough: the check fired on 27-38% of probe draws even
    # with rows measured on the version itself (docs/results/chain/).
    mine = tracker.find_runs({TAG + "kind": "release", TAG + "role": "job",
                              TAG + "base_version": str(champion.version)})
    checked = [r.data.tags.get(TAG + "matrix_check") for r in mine if r.data.tags.get(TAG + "matrix_check")]
    stale = checked.count("stale")
    full = dist.stats_refresh < 0 or (stale >= 2 and 2 * stale > len(checked))
    due = max(0, (len(names) if full else dist.stats_refresh) - own)
    refresh = stalest_first({t: d for t, d in age.items() if d > 0}, cost)[:due]
    jobs = RemoteJobs(settings, app)
    todo = (missing + refresh)[: dist.stats_batch]
    submitted = [jobs.submit_stats(t)["job_id"] for t in todo]
    return {"action": "submitted" if submitted else "idle", "jobs": submitted, "tasks": todo,
            "missing": len(missing), "refresh_due": len(refresh), "champion": champion.version,
            "stale_checks": stale, "checked_releases": len(checked)}


def refit(task: Any) -> dict[str, Any]:
    """Refit the completion model on the current matrix, ahead of the next release.

    The fit lands in the workspace's completer cache (service.completers.completer), so the next
    release on this matrix starts from it; the job also snapshots the matrix
    (`matrix/forgetting.npz`) and fails early, on a schedule, if the matrix breaks the method.
    The job id is the set of rows: an unchanged matrix is not refit.
    """
    import tempfile

    from service.pipeline.completion import completer
    from service.pipeline.inputs import load_upstream
    from service.pipeline.predict import make_method
    from service.tracking.jobs import job_id_for, run_job
    from service.tracking.matrix import choose_rows, load_rows
    from service.tracking.registry import Registry
    from service.tracking.store import TAG, RunHandle, Tracker

    settings = task.app.ftctl_settings
    tracker = Tracker(settings)
    champion = Registry(tracker).champion()
    upstream = load_upstream(settings)
    method = settings.completion_method
    need = make_method(settings, method, upstream).min_rows
    got = choose_rows(tracker, upstream, base_version=champion.version, min_rows=need)
    rows = len(got.runs)
    if rows < need:
        return {"action": "skipped", "reason": f"{method} needs {need} rows, the matrix "
                f"has {rows}; the stats schedule grows it"}
    job_id = job_id_for("refit", rows=sorted(got.keys), method=method)

    def body(run: RunHandle) -> dict[str, Any]:
        t0 = time.perf_counter()
        completer(settings, tracker, upstream, method, champion.version)
        seconds = time.perf_counter() - t0
        run.log_dict({"rows": got.keys, "note": got.note}, "matrix/rows.json")
        if rows * upstream.n * 4 <= MATRIX_ARTIFACT_BYTES:  # a snapshot to review; larger ones
            with tempfile.TemporaryDirectory() as tmp:   # are rebuilt from rows.json's runs
                load_rows(tracker, upstream, got).matrix.save(Path(tmp) / "forgetting.npz")
                run.log_artifacts(Path(tmp), "matrix")
        run.log_metrics({"rows": float(rows), "fit_seconds": seconds})
        return {"method": method, "rows": rows, "columns": upstream.n,
                "fit_seconds": seconds, "note": got.note, "champion": champion.version}

    return run_job(tracker, kind="refit", job_id=job_id, name=f"refit:{method}",
                   tags={TAG + "digest": upstream.digest, TAG + "base_version": str(champion.version)},
                   body=body)


# The refit logs the matrix it fitted as an .npz up to this size (256 MB: 64 rows x 10^6 examples);
# beyond it only the run ids of its rows, from which `load_rows` rebuilds it.
MATRIX_ARTIFACT_BYTES = 256 * 2**20


def register(app: Any) -> None:
    """Register the beat-triggered jobs (with the job tasks' retry policy) and the schedule."""
    from service.dist.tasks import job_task_options

    for fn in (inbox_scan, stats_when_idle, refit):
        app.task(name=f"ftctl.{fn.__name__}", **job_task_options(app))(fn)
    app.conf.beat_schedule = beat_schedule(app.ftctl_dist)
