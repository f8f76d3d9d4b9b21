"""The pure parts of the distributed mode: Celery configuration, routing, schedules, the inbox,
shard bounds and worker flags. No broker needed."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from service.dist.app import make_app
from service.dist.beat import beat_schedule, parse_schedule
from service.dist.config import ROUTES, DistConfig, celery_config
from service.dist.inbox import Inbox
from service.dist.tasks import job_of, shard_bounds
from service.errors import ServiceError
from service.settings import load_settings

BROKER = "redis://:secret@127.0.0.1:6379/9"


def settings(**env: str):
    return load_settings(env={"FTCTL_BROKER_URL": BROKER, "FTCTL_WORKSPACE": "/tmp/x", **env})


def test_reliability_settings_for_long_gpu_jobs() -> None:
    dist = DistConfig.from_settings(settings(), env={"FTCTL_MAX_JOB_SECONDS": "7200"})
    conf = celery_config(settings(), dist)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"]
    # Liveness, not timeouts: a 2-hour job keeps its message by heartbeat; a dead one is back
    # within 6 heartbeats, and every idle worker sweeps once a beat.
    opts = conf["broker_transport_options"]
    assert opts["visibility_timeout"] == 6 * dist.heartbeat_seconds == 60
    assert opts["unacked_restore_interval"] == dist.heartbeat_seconds
    assert opts["unacked_restore_throttle"] == 1
    assert conf["task_soft_time_limit"] == 7200 < conf["task_time_limit"]
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_backend"] == BROKER


def test_routes_put_model_work_on_gpu_and_the_rest_on_cpu() -> None:
    dist = DistConfig.from_settings(settings(), env={"FTCTL_QUEUE_PREFIX": "p-"})
    conf = celery_config(settings(), dist)
    # A release is a chain: its fine-tunes on the gpu queue, its other stages on the cpu queue.
    assert conf["task_routes"]["ftctl.release_warmup"] == {"queue": "p-gpu"}
    assert conf["task_routes"]["ftctl.release_train"] == {"queue": "p-gpu"}
    for stage in ("begin", "predict", "finish"):
        assert conf["task_routes"][f"ftctl.release_{stage}"] == {"queue": "p-cpu"}
    assert conf["task_routes"]["ftctl.merge_shards"] == {"queue": "p-cpu"}
    # Each queue has its own exchange and key (a bare Queue(name) would route gpu jobs to cpu).
    assert {(q.name, q.exchange.name, q.routing_key) for q in conf["task_queues"]} == {
        ("p-gpu", "p-gpu", "p-gpu"), ("p-cpu", "p-cpu", "p-cpu")}
    app = make_app(settings(), env={"FTCTL_QUEUE_PREFIX": "p-"})
    assert set(ROUTES) <= set(app.tasks)
    assert app.amqp.router.route({}, "ftctl.measure_shard")["queue"].name == "p-gpu"


def test_bad_distributed_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(ServiceError, match="FTCTL_BROKER_URL"):
        celery_config(load_settings(env={}), DistConfig())
    with pytest.raises(ServiceError, match="not a Redis URL"):
        celery_config(settings(FTCTL_BROKER_URL="amqp://x"), DistConfig())
    with pytest.raises(ServiceError, match="FTCTL_MAX_ATTEMPTS must be an integer"):
        DistConfig.from_settings(settings(), env={"FTCTL_MAX_ATTEMPTS": "many"})
    with pytest.raises(ServiceError, match="max_attempts must be >= 1"):
        DistConfig.from_settings(settings(), env={"FTCTL_MAX_ATTEMPTS": "0"})
    with pytest.raises(ServiceError, match="shorter than 4 heartbeats"):  # live jobs redelivered
        DistConfig.from_settings(settings(), env={"FTCTL_VISIBILITY_TIMEOUT": "30"})


def test_schedules_accept_cron_or_seconds() -> None:
    cron = parse_schedule("*/5 * * * *")
    assert 0 in cron.minute and 5 in cron.minute and 3 not in cron.minute
    assert parse_schedule("2.5") == timedelta(seconds=2.5)
    assert parse_schedule("off") is None
    for bad in ("every hour", "* * *", "-1", "61 * * * *"):
        with pytest.raises(ServiceError):
            parse_schedule(bad)
    dist = DistConfig(schedule_inbox="3", schedule_stats="off", queue_prefix="p-")
    sched = beat_schedule(dist)
    assert set(sched) == {"ftctl-inbox", "ftctl-refit"}
    assert sched["ftctl-inbox"]["options"]["queue"] == "p-cpu"


def test_inbox_items_settle_then_move_through_processing(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox").ensure()
    data = tmp_path / "new.jsonl"
    data.write_text('{"text": "a"}\n')
    copied = inbox.add(str(data))
    pointer = inbox.add("wn_noun_food", method="knn")
    assert copied.read_text() == data.read_text()
    assert json.loads(pointer.read_text()) == {"task": "wn_noun_food", "method": "knn"}
    assert inbox.ready() == []  # just written: may still be copying
    (inbox.root / ".hidden").write_text("x")
    (inbox.root / "half.partial").write_text("x")
    old = time.time() - 60
    os.utime(copied, (old, old))
    os.utime(pointer, (old + 1, old + 1))
    assert [p.name for p in inbox.ready()] == [copied.name, pointer.name]  # oldest first
    item = inbox.claim(inbox.ready()[1])
    assert Inbox.request_for(item) == {"task": "wn_noun_food", "method": "knn"}
    assert Inbox.request_for(copied) == {"task": str(copied)}
    done = inbox.finish(item, ok=False, note="no champion")
    assert done.parent.name == "failed" and (done.parent / (done.name + ".error.txt")).exists()
    again = inbox.add(str(data))
    assert again.name != copied.name  # the same file added twice is two items


def test_inbox_pointer_errors_name_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "x.task.json"
    bad.write_text('{"task": "a", "steps": 3}')
    with pytest.raises(ServiceError, match="allowed: task, method, mode"):
        Inbox.request_for(bad)
    bad.write_text("nope")
    with pytest.raises(ServiceError, match="not JSON"):
        Inbox.request_for(bad)


@pytest.mark.parametrize("n,count", [(210, 4), (7, 3), (3, 5), (1, 1)])
def test_shards_cover_every_column_once(n: int, count: int) -> None:
    bounds = [shard_bounds(n, i, count) for i in range(count)]
    covered = [c for lo, hi in bounds for c in range(lo, hi)]
    assert covered == list(range(n))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    with pytest.raises(ServiceError, match="does not exist"):
        shard_bounds(n, count, count)


def test_job_ids_of_task_ids() -> None:
    assert job_of("release-abc123.2-1f2e3d4c") == "release-abc123"
    assert job_of("release-abc123.2-1f2e3d4c-warmup") == "release-abc123"
    assert job_of("my.job.1-1f2e3d4c") == "my.job"
    assert job_of("diagnose-x.1") == "diagnose-x"


def test_worker_flags() -> None:
    from cli.worker import worker_argv

    argv, env = worker_argv("gpu", "q-gpu", 3, None, "INFO")
    assert env == {"CUDA_VISIBLE_DEVICES": "3"}
    assert argv[argv.index("--pool") + 1] == "solo" and argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("-Q") + 1] == "q-gpu"
    argv, env = worker_argv("cpu", "q-cpu", None, 4, "INFO")
    assert argv[argv.index("--pool") + 1] == "prefork" and argv[argv.index("--concurrency") + 1] == "4"
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"


def test_per_job_settings_travel_as_json_and_are_validated() -> None:
    from service.dist.store import job_overrides
    from service.dist.tasks import job_settings

    s = settings(FTCTL_METHOD="knn", FTCTL_STEPS="7")
    app = make_app(settings())
    sent = json.loads(json.dumps(job_overrides(s)))  # what crosses the broker
    got = job_settings(app, sent)
    assert (got.method, got.steps, got.lora) == ("knn", 7, s.lora)
    assert got.workspace == app.ftctl_settings.workspace  # paths are the worker's own
    with pytest.raises(ServiceError, match="cannot be set per job"):
        job_settings(app, {"workspace": "/elsewhere"})
    with pytest.raises(ServiceError, match="JSON scalars"):
        job_settings(app, {"k": [1, 2]})
    with pytest.raises(ServiceError, match="unknown method"):
        job_settings(app, {"method": "magic"})


def test_progress_reads_stage_step_and_eta_from_pipeline_messages() -> None:
    from service.dist.client import describe
    from service.dist.store import JobStore
    from service.dist.tasks import JobCancelled, Progress
    from tests.infra.workers import require_redis, session_db

    require_redis()
    app = make_app(settings(FTCTL_BROKER_URL=f"redis://127.0.0.1:6379/{session_db()}"),
                   env={"FTCTL_QUEUE_PREFIX": f"unit{os.getpid()}-"})
    store = JobStore.for_app(app)
    store.create("p-job", {"kind": "release", "state": "PENDING"})
    try:
        progress = Progress(app.tasks["ftctl.release_train"], store, "p-job")
        progress("release x: method mf")
        assert progress.stage == "release_train"
        progress("fine-tuning x: step 10/40, loss 2.1")
        assert progress.stage == "fine-tuning x"
        record = store.get("p-job")
        assert record["state"] == "PROGRESS" and record["message"].endswith("loss 2.1")
        # The chain is observed through its last task: progress also lives in the job record.
        assert record["progress"]["step"] == 10 and record["progress"]["total"] == 40
        line = describe({"job_id": "p-job", "state": "PROGRESS",
                         "progress": {"message": "fine-tuning x", "step": 10, "total": 40, "eta": 3.0}})
        assert line == "p-job: PROGRESS — fine-tuning x — step 10/40 — ETA 3 s"
        store.cancel("p-job", 0)  # the submission of this (task-id-less) delivery
        with pytest.raises(JobCancelled):
            progress("fine-tuning x: step 20/40")
    finally:
        store.r.delete(*store.r.keys(f"{store.p}*"))
