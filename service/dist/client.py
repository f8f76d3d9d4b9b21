"""Remote jobs: submit to the Celery workers, follow progress, list / show / cancel / retry.

Usage::

    jobs = RemoteJobs(settings)                        # needs FTCTL_BROKER_URL
    job = jobs.submit_release(ReleaseRequest(task="wn_noun_food"))   # -> {"job_id": ...}
    result = jobs.wait(job["job_id"], progress=print)  # stage, step, ETA until done
    jobs.list(); jobs.show(job_id); jobs.cancel(job_id); jobs.retry(job_id)

A job is identified by its ftctl job id (the idempotency key also tagged on its MLflow run), not
by a Celery task id: submitting the same job twice returns the existing job, and a worker that
receives a job whose run already FINISHED returns the recorded result. Each job has a small
record in Redis (`ftctl:<prefix>job:<id>`: kind, arguments, Celery task ids, state, last progress
message) so that `jobs list` needs neither the result backend's key scan nor MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.dist.store import STALE, TERMINAL, JobStore, job_overrides, submission_of
from service.errors import ServiceError
from service.settings import Settings


class RemoteJobs:
    """The client side of the distributed mode."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        from service.dist.config import configured_app

        self.settings = settings
        self.app = app or configured_app(settings)  # tasks are sent by name: no bodies needed
        self.store = JobStore.for_app(self.app)

    # -- submission -------------------------------------------------------------------------
    def _send(self, job_id: str, kind: str, args: dict[str, Any], *, resubmit: bool = False) -> dict[str, Any]:
        """Create the job record and send the job's canvas, unless the job already exists."""
        record = self.store.get(job_id)
        if record is not None and not resubmit:
            if (record.get("kind"), _asked(record.get("args"))) != (kind, _asked(args)):
                raise ServiceError(
                    f"job id {job_id!r} already names a {record.get('kind')} job with arguments "
                    f"{_brief(record.get('args'))}; this submission is a {kind} job with "
                    f"{_brief(args)}. Fix: give another --job-id, or none (it is derived)")
            return {**record, "submitted": False}
        n = int(record.get("submissions", 0)) + 1 if record else 1
        # A fresh Celery task id per submission: revoked ids are remembered by the workers, and
        # results outlive job records in the backend (a nonce: a reused job id never sees them).
        task_id = f"{job_id}.{n}-{uuid.uuid4().hex[:8]}"
        canvas = build_canvas(self.app, kind, job_id, args, task_id)
        fields = {"job_id": job_id, "kind": kind, "args": args, "task_id": task_id,
                  "state": "PENDING", "submitted": time.time(), "submissions": n, "message": "queued",
                  "queue": self.app.amqp.router.route({}, _task_name(kind))["queue"].name}
        if record is None:
            if not self.store.create(job_id, fields):  # lost a race with an identical submit
                return {**(self.store.get(job_id) or {}), "submitted": False}
        else:
            self.store.clear(job_id)
            self.store.r.hdel(self.store.key("job", job_id), *STALE)
            self.store.update(job_id, **{k: v for k, v in fields.items() if k != "job_id"})
        try:
            canvas.apply_async()
        except Exception as e:  # the record must not stay PENDING for a job never queued
            self.store.update(job_id, state="FAILURE", error=f"could not queue the job: {e}")
            raise ServiceError(f"could not queue job {job_id} on {safe_url(self.settings.broker_url)} "
                               f"({e}); check the broker, then `ftctl jobs retry {job_id}`") from None
        return {**fields, "submitted": True}

    def submit_release(self, req: Any) -> dict[str, Any]:
        """Queue a release under its one job id (derived as in-process, unless the user gave one):
        the Redis record, the MLflow runs and the registry's lineage all carry it. The parent is
        pinned now: the current @champion unless the request names a version."""
        from service.pipeline.inputs import job_context, resolve_task
        from service.release.request import release_job_id

        ctx = job_context(self.settings, req.parent_version)
        task = resolve_task(self.settings, req.task)
        job_id = req.job_id or release_job_id(self.settings, req, ctx, task)
        request = {**dataclasses.asdict(req), "parent_version": ctx.parent.version, "job_id": job_id}
        return self._send(job_id, "release", {"request": request,
                                              "overrides": job_overrides(self.settings)})

    def submit_stats(self, task_ref: str, shards: int = 1) -> dict[str, Any]:
        """A statistics job on the current @champion (the in-process job id: one job however it
        runs); with shards > 1 its measurement is split across the gpu workers."""
        from service.pipeline.inputs import job_context, resolve_task
        from service.pipeline.stats import stats_job_id

        if shards < 1:
            raise ServiceError(f"shards must be >= 1, got {shards}")
        ctx = job_context(self.settings)
        task = resolve_task(self.settings, task_ref)
        job_id = stats_job_id(self.settings, task, ctx.parent.version, ctx.upstream.digest)
        return self._send(job_id, "stats", {"task_ref": task_ref, "shards": shards,
                                            "overrides": job_overrides(self.settings)})

    def submit_measure(self, version: int = 0, shards: int = 2) -> dict[str, Any]:
        """Sharded NLL measurement of a version on the whole upstream set (merged into one row)."""
        from service.tracking.jobs import job_id_for

        if shards < 1:
            raise ServiceError(f"shards must be >= 1, got {shards}")
        version = version or self._champion_version()
        job_id = job_id_for("measure", version=version, line=self.settings.model_line,
                            world=self.settings.world, seed=self.settings.seed)
        return self._send(job_id, "measure", {"version": version, "shards": shards,
                                              "overrides": job_overrides(self.settings)})

    def submit_diagnose(self, seconds: float = 1.0, steps: int = 5, job_id: str = "",
                        queue: str = "gpu") -> dict[str, Any]:
        """A diagnostic job: reaches the tracking store, runs `steps` timed steps, records a run."""
        from service.tracking.jobs import job_id_for

        job_id = job_id or job_id_for("diagnose", t=time.time())
        return self._send(job_id, "diagnose", {"seconds": seconds, "steps": steps, "queue": queue})

    def _champion_version(self) -> int:
        from service.tracking.registry import Registry
        from service.tracking.store import Tracker

        return Registry(Tracker(self.settings)).champion().version

    # -- observation ------------------------------------------------------------------------
    def show(self, job_id: str) -> dict[str, Any]:
        record = self.store.get(job_id)
        if record is None:
            raise ServiceError(f"no job {job_id!r} on broker {safe_url(self.settings.broker_url)}; "
                               "see `ftctl jobs list`")
        res = self.app.AsyncResult(record["task_id"])
        state, info = res.state, res.info
        out = dict(record)
        if record.get("state") in ("CANCELLED",):
            state = "CANCELLED"
        elif record.get("state") == "FAILURE" and state not in TERMINAL:
            state = "FAILURE"  # ftctl failed it where Celery could not (a worker that had to stop)
        elif state == "PENDING" and record.get("state") not in (None, "PENDING"):
            state = record["state"]  # e.g. a rejected message: the worker wrote the record
        out["state"] = state
        if state == "SUCCESS":
            out["result"] = info
        elif state in ("FAILURE", "REVOKED"):
            out["error"] = record.get("error") or _error_text(info)
        elif isinstance(info, dict):
            out["progress"] = info
        elif isinstance(record.get("progress"), dict):  # a chain: its earlier stage reported
            out["progress"] = record["progress"]
        if state in ("STARTED", "PROGRESS", "RETRY"):
            lost = self._lost(record)
            if lost:
                out["state"], out["message"] = "LOST", lost
                out["progress"] = {k: v for k, v in (out.get("progress") or {}).items() if k != "eta"}
        return out

    def _lost(self, record: dict[str, Any]) -> str | None:
        """Why a running job's worker is gone (its heartbeat stopped), or None while it beats."""
        beat, dist = record.get("beat"), self.app.ftctl_dist
        if not isinstance(beat, int | float):
            return None  # between two stages, or queued: nothing runs it, nothing has to beat
        silent = time.time() - beat
        if silent <= 3 * dist.heartbeat_seconds:
            return None
        step = (record.get("progress") or {}).get("step")
        at = f" at step {step}" if step else ""
        back = max(0.0, dist.visibility + dist.heartbeat_seconds - silent)
        return (f"worker lost{at} (no heartbeat for {silent:.0f} s); the job is requeued from its "
                f"checkpoint within ~{back:.0f} s, or now with `ftctl jobs retry {record['job_id']}`")

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for job_id in self.store.ids(limit):
            try:
                j = self.show(job_id)
            except ServiceError:
                continue
            out.append({k: j.get(k) for k in ("job_id", "kind", "state", "message", "submitted",
                                              "updated", "worker", "attempts", "error")})
        return out

    def wait(self, job_id: str, progress: Callable[[str], None] | None = None,
             timeout: float | None = None, poll: float = 0.5) -> dict[str, Any]:
        """Follow a job until it ends; returns its result, raises ServiceError if it failed."""
        say = progress or (lambda _m: None)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = ""
        while True:
            j = self.show(job_id)
            line = describe(j)
            if line != last:
                say(line)
                last = line
            if j["state"] in TERMINAL:
                if j["state"] == "SUCCESS":
                    return j["result"]
                raise ServiceError(f"job {job_id} {j['state'].lower()}: {j.get('error') or j.get('message')}"
                                   f"; inspect with `ftctl jobs show {job_id}`, rerun with "
                                   f"`ftctl jobs retry {job_id}`")
            if deadline is not None and time.monotonic() > deadline:
                raise ServiceError(f"job {job_id} still {j['state']} after {timeout:g} s; it keeps "
                                   f"running — follow it with `ftctl jobs show {job_id}`")
            time.sleep(poll)

    # -- control ----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel: a queued job never starts; a running one stops at its next progress report."""
        j = self.show(job_id)
        if j["state"] in TERMINAL:
            return {**j, "cancelled": False}
        self.store.cancel(job_id, submission_of(j["task_id"]))
        for task_id in stage_task_ids(j):  # every queued stage of the chain, not only the last
            self.app.control.revoke(task_id)
        self.store.update(job_id, state="CANCELLED", message="cancelled by the user")
        return {**self.show(job_id), "cancelled": True}

    def retry(self, job_id: str) -> dict[str, Any]:
        """Resubmit a failed, cancelled or lost job with the same arguments (same job id); copies
        of the earlier submission are dropped when they arrive."""
        j = self.show(job_id)
        if j["state"] not in ("FAILURE", "CANCELLED", "REVOKED", "LOST"):
            raise ServiceError(f"job {job_id} is {j['state']}; only failed, cancelled or lost jobs "
                               "can be retried (a finished job id returns its recorded result)")
        holder = self.store.lock_owner(job_id)
        if holder:
            raise ServiceError(f"job {job_id} still runs on {holder} (it stops at its next progress "
                               "report, or its lock expires if that worker died); retry it after")
        return self._send(job_id, j["kind"], j["args"], resubmit=True)


def stage_task_ids(record: dict[str, Any]) -> list[str]:
    """Every Celery task id of a job's current submission (build_canvas names them)."""
    tid = record["task_id"]
    if record.get("kind") == "release":
        return [tid, *(f"{tid}-{s}" for s in ("begin", "warmup", "predict", "train"))]
    if record.get("kind") == "stats":
        n = int((record.get("args") or {}).get("shards", 1))
        return [tid, f"{tid}-train", *(f"{tid}-shard{i}" for i in range(n))]
    return [tid]


def _task_name(kind: str) -> str:
    """The task whose queue a job is listed under (a release's fine-tune runs on the gpu)."""
    return {"release": "ftctl.release_train", "stats": "ftctl.stats", "measure": "ftctl.measure_shard",
            "diagnose": "ftctl.diagnose"}[kind]


def build_canvas(app: Any, kind: str, job_id: str, args: dict[str, Any], task_id: str) -> Any:
    """The Celery canvas of a job: arguments are ids, URIs and small JSON dicts only."""
    from celery import chain, chord, group

    t = _Signatures(app)
    if kind == "release":
        # The release's stages on their queues, each handed the state of the one before:
        # cpu begin → gpu warm-up → cpu predict → gpu replay-train → cpu finish (observed).
        # Every stage's task id carries the job id (failure signals map it back to the job).
        ov = args["overrides"]
        stages = [t[f"ftctl.release_{name}"].s(job_id, ov).set(task_id=f"{task_id}-{name}")
                  for name in ("warmup", "predict", "train")]
        return chain(t["ftctl.release_begin"].si(job_id, args["request"], ov)
                     .set(task_id=f"{task_id}-begin"), *stages,
                     t["ftctl.release_finish"].s(job_id, ov).set(task_id=task_id))
    if kind == "stats":
        n, ov = int(args.get("shards", 1)), args["overrides"]
        if n <= 1:
            return t["ftctl.stats"].si(job_id, args["task_ref"], ov).set(task_id=task_id)
        # gpu fine-tune → n gpu shards (each handed the fine-tune's state) → one cpu merge.
        shards = group(t["ftctl.stats_shard"].s(job_id, i, n, ov).set(task_id=f"{task_id}-shard{i}")
                       for i in range(n))
        return chain(t["ftctl.stats_train"].si(job_id, args["task_ref"], ov).set(task_id=f"{task_id}-train"),
                     chord(shards, t["ftctl.stats_merge"].s(job_id, ov).set(task_id=task_id)))
    if kind == "measure":
        # One flat group of shards + one merge task (no nested chords: celery#5229, #9674).
        n = args["shards"]
        shards = group(t["ftctl.measure_shard"].si(job_id, args["version"], i, n, args["overrides"])
                       for i in range(n))
        return chord(shards, t["ftctl.merge_shards"].s(job_id, args["version"], args["overrides"])
                     .set(task_id=task_id))
    if kind == "diagnose":
        sig = t["ftctl.diagnose"].si(job_id, args["seconds"], args["steps"]).set(task_id=task_id)
        return sig.set(queue=app.ftctl_dist.queue(args.get("queue", "gpu")))
    raise ServiceError(f"unknown job kind {kind!r}; use release, stats, measure or diagnose")


class _Signatures:
    """`t[name].s(...)` / `.si(...)` by task name: a client sends tasks without their bodies (the
    routes in the app's configuration pick each one's queue)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getitem__(self, name: str) -> Any:
        app = self.app

        class Named:
            @staticmethod
            def s(*args: Any) -> Any:
                return app.signature(name, args=args)

            @staticmethod
            def si(*args: Any) -> Any:
                return app.signature(name, args=args, immutable=True)

        return Named


def _asked(args: Any) -> Any:
    """A job's arguments as the user asked for them: a release's parent pinned at submission
    (where @champion was) is not part of the request, like in-process (check_job_inputs)."""
    if not isinstance(args, dict) or not isinstance(args.get("request"), dict):
        return args
    request = {k: v for k, v in args["request"].items() if k not in ("parent_version", "job_id")}
    return {**args, "request": request}


def _brief(args: Any) -> str:
    """A job's arguments for an error message (the request or task, without the overrides)."""
    if not isinstance(args, dict):
        return repr(args)
    shown = args.get("request") or {k: v for k, v in args.items() if k != "overrides"}
    return json.dumps(shown, sort_keys=True, default=str)[:300]


def describe(j: dict[str, Any]) -> str:
    """One progress line: state, stage, step/total and ETA when known."""
    p = j.get("progress") or {}
    parts = [f"{j['job_id']}: {j['state']}"]
    msg = p.get("message") or j.get("message")
    if msg:
        parts.append(str(msg))
    if p.get("total"):
        parts.append(f"step {p.get('step', 0)}/{p['total']}")
    if p.get("eta") is not None:
        parts.append(f"ETA {float(p['eta']):.0f} s")
    return " — ".join(parts)


def _error_text(info: Any) -> str:
    if isinstance(info, BaseException):
        text = str(info).strip() or type(info).__name__
        return f"{type(info).__name__}: {text}" if type(info).__name__ not in text else text
    return str(info)


def safe_url(url: str) -> str:
    """A broker URL without its password (for messages)."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
