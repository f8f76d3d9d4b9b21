"""Configuration of the distributed mode: queues and routes, the `[ftctl.dist]` knobs and the
Celery configuration for multi-hour GPU jobs that must run exactly once.

The client side needs only this (it sends tasks by name); the workers' task bodies are
registered by service/dist/app.py.

Why these Celery settings (see docs/operations.md):
- acks_late + reject_on_worker_lost: a worker killed mid-job (OOM, preemption) does not lose it;
  the message is redelivered. That makes redelivery *normal*, so every task is idempotent by job
  id (MLflow lookup) and holds a heartbeat lock so that two copies never train at once.
- liveness, not timeouts: while a job runs, its heartbeat renews the job's lock and refreshes its
  message in the broker's unacked index, so Redis never redelivers a live job; when the worker
  dies (SIGKILL, OOM, preemption) the heartbeat stops and the message is restored after the short
  `visibility_timeout` (default 6 heartbeats = 60 s), resuming the job from its checkpoint. The
  lock still makes any copy of a live job wait instead of training twice.
- prefetch multiplier 1: a GPU worker never hoards a second multi-hour job.
- worker_cancel_long_running_tasks_on_connection_loss: after a broker reconnect the message is
  redelivered anyway, so the running copy is cancelled rather than duplicated (celery PR #6654).
- JSON only: task arguments are ids, URIs and small option dicts; pickle is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from service.errors import ServiceError
from service.settings import Settings, load_settings

GPU, CPU = "gpu", "cpu"
# Which queue each task kind goes to: GPU for anything that runs the model, CPU for the rest.
ROUTES = {
    "ftctl.release_warmup": GPU, "ftctl.release_train": GPU, "ftctl.stats": GPU,
    "ftctl.stats_train": GPU, "ftctl.stats_shard": GPU, "ftctl.stats_merge": CPU,
    "ftctl.measure_shard": GPU, "ftctl.diagnose": GPU,
    "ftctl.release_begin": CPU, "ftctl.release_predict": CPU, "ftctl.release_finish": CPU,
    "ftctl.merge_shards": CPU, "ftctl.refit": CPU, "ftctl.inbox_scan": CPU,
    "ftctl.stats_when_idle": CPU, "ftctl.echo": CPU,
}


@dataclass(frozen=True)
class DistConfig:
    """Knobs of the distributed mode: the `[ftctl.dist]` table of the settings file, overridden by
    env FTCTL_<NAME upper>. E.g. `schedule_inbox = "*/10 * * * *"`, `max_job_seconds = 86400`."""

    result_backend: str = ""
    """Result backend URL; empty = the broker URL."""
    queue_prefix: str = ""
    """Prefix of the queue names (`<prefix>gpu`), to share one Redis between deployments/tests."""
    max_job_seconds: int = 6 * 3600
    """Longest job (or release stage) expected: its soft time limit. Enforced by ftctl itself as
    well, since Celery's limits do not apply in the solo pool of the gpu workers."""
    hard_limit_margin: int = 900
    """Hard limit = max_job_seconds + this: a job still running then (stuck) ends its worker."""
    visibility_timeout: int = 0
    """Seconds without a heartbeat after which Redis redelivers a job's message (its worker is
    gone); 0 = 6 × heartbeat_seconds. Must be >= 4 heartbeats: live jobs refresh it each beat."""
    max_retries: int = 3
    """Retries of a job after a transient error (broker/tracking store unreachable)."""
    max_attempts: int = 3
    """Poison-job cap: deliveries of one job (worker deaths included) before it is failed for good."""
    heartbeat_seconds: int = 10
    """Heartbeat period of a running job (its lock and its message); a lock not renewed for 3
    periods belongs to a dead worker."""
    inbox: str = ""
    """Inbox folder for task datasets; empty = <workspace>/inbox."""
    schedule_inbox: str = "*/5 * * * *"
    """When beat scans the inbox: a 5-field cron expression, or a number of seconds."""
    schedule_stats: str = "17 * * * *"
    """When beat queues statistics jobs for tasks without a full row (only if the gpu queue is idle)."""
    schedule_refit: str = "30 3 * * *"
    """When beat refits the completion models on the current matrix."""
    stats_batch: int = 1
    """Statistics jobs queued per idle-gpu tick."""
    stats_refresh: int = 4
    """Rows measured again on each new @champion (the row measured most promotions ago first,
    the cheapest among equals); every other task reuses its nearest ancestor's row. -1 = every
    catalogue task again on every champion (the full policy). 4: on the default world it halved
    the prediction loss of reusing ancestor rows at a quarter of the full policy's cost
    (docs/results/chain/results.md)."""

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> DistConfig:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        unknown = sorted(set(settings.extra) - {f.name for f in fields(cls)})
        if unknown:
            raise ServiceError(f"unknown [ftctl.dist] setting(s) {unknown}; known: "
                               f"{', '.join(f.name for f in fields(cls))}")
        for f in fields(cls):
            raw = env.get(f"FTCTL_{f.name.upper()}", settings.extra.get(f.name))
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.type == "int" else str(raw)
            except ValueError:
                raise ServiceError(f"FTCTL_{f.name.upper()} must be an integer, got {raw!r}") from None
        cfg = cls(**values)
        if cfg.visibility_timeout and cfg.visibility_timeout < 4 * cfg.heartbeat_seconds:
            raise ServiceError(
                f"FTCTL_VISIBILITY_TIMEOUT={cfg.visibility_timeout} is shorter than 4 heartbeats "
                f"({4 * cfg.heartbeat_seconds} s): Redis would redeliver jobs that are still alive. "
                "Raise it, or lower FTCTL_HEARTBEAT_SECONDS")
        if cfg.stats_refresh < -1:
            raise ServiceError(f"FTCTL_STATS_REFRESH must be -1 (every task) or >= 0, got "
                               f"{cfg.stats_refresh}")
        if cfg.max_attempts < 1 or cfg.max_retries < 0 or cfg.heartbeat_seconds < 1:
            raise ServiceError("max_attempts must be >= 1, max_retries >= 0 and heartbeat_seconds "
                               ">= 1; fix the FTCTL_* variables")
        return cfg

    @property
    def visibility(self) -> int:
        return self.visibility_timeout or 6 * self.heartbeat_seconds

    def queue(self, name: str) -> str:
        return self.queue_prefix + name

    @property
    def key_prefix(self) -> str:
        """Prefix of ftctl's own Redis keys (job records, locks, attempt counters)."""
        return f"ftctl:{self.queue_prefix}"


def require_broker(settings: Settings) -> str:
    url = settings.broker_url
    if not url:
        raise ServiceError("no broker configured: set FTCTL_BROKER_URL (e.g. "
                           "redis://:PASSWORD@host:6379/0) or run without --remote (in-process)")
    if not url.startswith(("redis://", "rediss://")):
        raise ServiceError(f"broker {url!r} is not a Redis URL; ftctl supports redis:// and rediss://")
    return url


def celery_config(settings: Settings, dist: DistConfig) -> dict[str, Any]:
    """The Celery configuration (a plain dict: easy to test and to print)."""
    from kombu import Exchange, Queue

    broker = require_broker(settings)
    routes = {name: {"queue": dist.queue(q)} for name, q in ROUTES.items()}
    return {
        "broker_url": broker,
        "result_backend": dist.result_backend or broker,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Explicit exchange + routing key per queue: a bare Queue(name) binds to the *default*
        # exchange and key, and gpu messages would land in the cpu queue.
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q)
                        for q in (dist.queue(GPU), dist.queue(CPU))],
        "task_default_queue": dist.queue(CPU),
        "task_default_exchange": dist.queue(CPU),
        "task_default_routing_key": dist.queue(CPU),
        "task_routes": routes,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,  # a failed job is recorded, not redelivered forever
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        # Every idle worker sweeps the unacked index once per heartbeat (kombu's default is every
        # 10 s x 10 calls): a dead worker's job is back in its queue within a beat of the timeout.
        "broker_transport_options": {"visibility_timeout": dist.visibility,
                                     "unacked_restore_interval": dist.heartbeat_seconds,
                                     "unacked_restore_throttle": 1},
        "result_backend_transport_options": {"visibility_timeout": dist.visibility},
        # A stage that ends while the broker restarts still hands on its chain: keep publishing
        # for ~5 minutes instead of Celery's default of three tries within a second.
        "task_publish_retry_policy": {"max_retries": 40, "interval_start": 0.5,
                                      "interval_step": 2, "interval_max": 10},
        "task_soft_time_limit": dist.max_job_seconds,
        "task_time_limit": dist.max_job_seconds + dist.hard_limit_margin,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": 30 * 24 * 3600,  # job status is kept a month (MLflow keeps it forever)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_consumer": "service.dist.tasks:JobConsumer",
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }



def configured_app(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Any:
    """A Celery app with ftctl's configuration and no task bodies: enough to submit and observe
    jobs (tasks are sent by name). Workers use service.dist.app.make_app."""
    from celery import Celery

    settings = settings or load_settings(env=dict(env) if env is not None else None)
    dist = DistConfig.from_settings(settings, env)
    app = Celery("ftctl", set_as_current=False)
    app.conf.update(celery_config(settings, dist))
    app.ftctl_settings = settings  # type: ignore[attr-defined]
    app.ftctl_dist = dist  # type: ignore[attr-defined]
    return app
