"""Job records, locks, attempt counters and cancel/stop flags in Redis (all under one prefix).

Each job has a small record (`ftctl:<prefix>job:<id>`: kind, arguments, Celery task ids, state,
last progress message), so that `jobs list` needs neither the result backend's key scan nor
MLflow. A Celery task id is `<job_id>.<submission>-<nonce>[-<stage>]`: `job_of` and
`submission_of` read it back.
"""

from __future__ import annotations

import json
import time
from typing import Any

from service.settings import Settings

TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELLED", "REVOKED"})


STALE = ("error", "finished", "summary", "started", "worker", "attempts", "progress")  # reset on resubmit


# Settings a submitter may override per job; everything else (paths, URIs) is the workers' own.
JOB_OVERRIDES = ("method", "k", "replay_ratio", "temperature", "heldout", "steps", "lora", "seed",
                 "batch_size", "lr", "warmup_fraction", "gate_max_heldout_forgetting",
                 "gate_max_relative_to_random", "gate_require_task_gain", "self_replay_tokens",
                 "gate_max_cumulative_forgetting", "gate_max_earlier_task_loss_increase",
                 "earlier_replay_share", "earlier_replay_candidates")


def job_overrides(settings: Settings) -> dict[str, Any]:
    """The per-job settings travelling with a job (JSON primitives only)."""
    return {k: getattr(settings, k) for k in JOB_OVERRIDES}


class JobStore:
    """Job records, locks, attempt counters and cancel flags in Redis (all under one prefix)."""

    # Delete the lock only if we still own it (a stale owner must not free a new owner's lock).
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
    _RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"

    def __init__(self, url: str, prefix: str, broker_url: str = "",
                 unacked_index: str = "unacked_index") -> None:
        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30,
                                      health_check_interval=30, retry_on_timeout=True)
        self.p = prefix
        # The broker's index of delivered, unacked messages (kombu's Redis transport): a running
        # job keeps its message's entry fresh, so Redis redelivers only the jobs of dead workers.
        self.broker = self.r if not broker_url or broker_url == url else redis.Redis.from_url(
            broker_url, decode_responses=True, socket_timeout=30, retry_on_timeout=True)
        self.unacked_index = unacked_index

    @classmethod
    def for_app(cls, app: Any) -> JobStore:
        opts = app.conf.broker_transport_options or {}
        index = opts.get("global_keyprefix", "") + opts.get("unacked_index_key", "unacked_index")
        return cls(app.conf.result_backend, app.ftctl_dist.key_prefix, app.conf.broker_url, index)

    def key(self, kind: str, job_id: str = "") -> str:
        return f"{self.p}{kind}:{job_id}" if job_id else f"{self.p}{kind}"

    def create(self, job_id: str, record: dict[str, Any]) -> bool:
        """Store a new record; False (and nothing written) if the job id already has one."""
        key = self.key("job", job_id)
        fields = {k: _enc(v) for k, v in record.items()}
        if not self.r.hsetnx(key, "job_id", job_id):
            return False
        self.r.hset(key, mapping=fields)
        self.r.zadd(self.key("jobs"), {job_id: time.time()})
        return True

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(self.key("job", job_id))
        return {k: _dec(v) for k, v in raw.items()} if raw else None

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        self.r.hset(self.key("job", job_id), mapping={k: _enc(v) for k, v in fields.items()})

    def ids(self, limit: int = 50) -> list[str]:
        return list(self.r.zrevrange(self.key("jobs"), 0, limit - 1))

    def acquire(self, job_id: str, owner: str, ttl: int) -> bool:
        return bool(self.r.set(self.key("lock", job_id), owner, nx=True, ex=ttl))

    def renew(self, job_id: str, owner: str, ttl: int) -> bool:
        return bool(self.r.eval(self._RENEW, 1, self.key("lock", job_id), owner, ttl))

    def release(self, job_id: str, owner: str) -> None:
        self.r.eval(self._RELEASE, 1, self.key("lock", job_id), owner)

    def lock_owner(self, job_id: str) -> str | None:
        return self.r.get(self.key("lock", job_id))

    def keep_delivery(self, delivery_tag: str) -> None:
        """Mark a delivered message as alive now (its visibility timeout starts again)."""
        self.broker.zadd(self.unacked_index, {delivery_tag: time.time()}, xx=True)

    def start_attempt(self, job_id: str) -> int:
        """Count a delivery that started; reset by `end_attempt` when the task exits cleanly, so
        the count is the number of consecutive deliveries whose worker died."""
        n = int(self.r.incr(self.key("attempts", job_id)))
        self.r.expire(self.key("attempts", job_id), 30 * 24 * 3600)
        return n

    def end_attempt(self, job_id: str) -> None:
        self.r.delete(self.key("attempts", job_id))

    def mark_stage_done(self, job_id: str, task_id: str, output: Any) -> None:
        """A chain stage (this Celery task id) completed with `output`: a redelivered copy returns
        it, so the chain goes on even if the worker died before sending the next stage."""
        self.r.hset(self.key("done", job_id), task_id, _enc(output))
        self.r.expire(self.key("done", job_id), 30 * 24 * 3600)

    def stage_output(self, job_id: str, task_id: str | None) -> Any:
        raw = self.r.hget(self.key("done", job_id), task_id) if task_id else None
        return None if raw is None else _dec(raw)

    def mark_stage_chained(self, job_id: str, task_id: str) -> None:
        """The chain went on from this stage (Celery sent the next stage): a later copy of it
        is dropped rather than sending the next stage again."""
        self.r.hset(self.key("chained", job_id), task_id, "1")
        self.r.expire(self.key("chained", job_id), 30 * 24 * 3600)

    def stage_chained(self, job_id: str, task_id: str | None) -> bool:
        return bool(task_id) and bool(self.r.hexists(self.key("chained", job_id), task_id))

    # Cancel and stop flags belong to one submission (a Celery task id carries its number), so
    # the stages of an old submission stay cancelled when `ftctl jobs retry` submits a new one.
    def stop(self, job_id: str, submission: int, reason: str) -> None:
        """Fail every later delivery of this submission with `reason` (its worker had to stop)."""
        self.r.set(self.key("stop", f"{job_id}:{submission}"), reason, ex=30 * 24 * 3600)

    def stopped(self, job_id: str, submission: int) -> str | None:
        return self.r.get(self.key("stop", f"{job_id}:{submission}"))

    def cancel(self, job_id: str, submission: int) -> None:
        self.r.set(self.key("cancel", f"{job_id}:{submission}"), "1", ex=30 * 24 * 3600)

    def cancelled(self, job_id: str, submission: int) -> bool:
        return bool(self.r.exists(self.key("cancel", f"{job_id}:{submission}")))

    def clear(self, job_id: str) -> None:
        self.r.delete(self.key("attempts", job_id))

    def queue_length(self, queue: str) -> int:
        return int(self.r.llen(queue))


def _enc(v: Any) -> str:
    return json.dumps(v, default=str)


def _dec(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def submission_of(task_id: str | None) -> int:
    """Submission number of a Celery task id (`<job_id>.<submission>-<nonce>[-<stage>]`)."""
    try:
        return int((task_id or "").rsplit(".", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return 0



def job_of(task_id: str | None) -> str:
    """Job id of a Celery task id (`<job_id>.<submission>-<nonce>[-<stage>]`)."""
    return (task_id or "").rsplit(".", 1)[0]

