"""The Celery app of the workers and the one scheduler: configuration (service/dist/config.py) plus
ftctl's task bodies (tasks.py) and beat jobs (beat.py).

Usage::

    ftctl worker --queue gpu --gpu 0      # one per GPU: solo pool, CUDA_VISIBLE_DEVICES=0
    ftctl worker --queue cpu              # prefork, one torch/BLAS thread per child
    ftctl scheduler                       # Celery beat: exactly ONE per deployment
    celery -A service.dist.app:app inspect ping   # plain celery tooling works too

Everything comes from the ftctl settings (`FTCTL_BROKER_URL` …) plus the distributed knobs of
`DistConfig` (env `FTCTL_<NAME>`, e.g. FTCTL_MAX_JOB_SECONDS). With an empty broker_url nothing
here is used: jobs run in-process. Clients (`RemoteJobs`) need only `configured_app`: they send
tasks by name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from service.dist import beat, tasks
from service.dist.config import configured_app
from service.dist.guard import Heartbeat
from service.dist.store import JobStore
from service.errors import ServiceError
from service.settings import Settings

SCHEDULER_LOCK = "beat"  # the job-store lock that keeps the scheduler to one per deployment


def make_app(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> Any:
    """A configured Celery app with ftctl's tasks and beat schedule registered (a new one per call)."""
    app = configured_app(settings, env)
    tasks.register(app)
    beat.register(app)
    return app


def run_scheduler(settings: Settings, loglevel: str = "INFO",
                  say: Callable[[str], None] = lambda _m: None) -> None:
    """Run Celery beat — exactly one per deployment: a second scheduler refuses to start while the
    first holds the lock in Redis (renewed by a heartbeat; a dead one's lock expires in 3 periods)."""
    app = make_app(settings)
    store = JobStore.for_app(app)
    owner = f"{socket.gethostname()}/{os.getpid()}"
    period = 20
    if not store.acquire(SCHEDULER_LOCK, owner, 3 * period):
        raise ServiceError(f"another scheduler is running ({store.lock_owner(SCHEDULER_LOCK)}); run "
                           "exactly one — stop it first, or wait a minute if it died")
    heartbeat = Heartbeat(store, SCHEDULER_LOCK, owner, period, record=False)
    heartbeat.start()
    schedule_file = settings.workspace.resolve() / f"celerybeat-schedule-{app.ftctl_dist.queue_prefix or 'main'}"
    settings.workspace.mkdir(parents=True, exist_ok=True)
    for name, entry in app.conf.beat_schedule.items():
        say(f"schedule {name}: {entry['task']} {entry['schedule']}")
    try:
        app.start(["beat", "--schedule", str(schedule_file), "--loglevel", loglevel])
    finally:
        heartbeat.stopped.set()
        store.release(SCHEDULER_LOCK, owner)


def __getattr__(name: str) -> Any:
    # `celery -A service.dist.app:app` builds the app from the environment on first use only,
    # so importing this module never needs a broker.
    if name == "app":
        global app
        app = make_app()
        return app
    raise AttributeError(name)
