"""Through the broker, for real: Redis, `ftctl worker` processes (gpu = solo, cpu = prefork), the
job machinery and a SQLite MLflow store shared with the workers. No eager mode anywhere.

The jobs are `ftctl.diagnose` jobs (a small real job through lock, idempotency, progress and an
MLflow run) and `ftctl.echo`; the tiny release end to end is in test_celery_release.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.infra.workers import Cluster, cluster, private_redis, require_redis, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One deployment for the module: a gpu worker and a cpu worker."""
    require_redis()
    with cluster(tmp_path_factory.mktemp("broker")) as c:
        c.worker("gpu")
        c.worker("cpu")
        yield c


def runs_of(c: Cluster, job_id: str) -> list[Any]:
    from service.tracking.store import TAG, Tracker

    return Tracker(c.settings()).find_runs({TAG + "job_id": job_id}, status=None)


def test_round_trip_through_broker_on_both_queues(running: Cluster) -> None:
    jobs = running.jobs()
    echo = jobs.app.tasks["ftctl.echo"].apply_async(({"a": [1, 2]},))
    assert echo.get(timeout=60) == {"a": [1, 2]}
    job = jobs.submit_diagnose(seconds=0.2, steps=2)
    assert job["submitted"] and job["queue"] == running.prefix + "gpu"
    lines: list[str] = []
    result = jobs.wait(job["job_id"], progress=lines.append, timeout=90)
    # The gpu worker runs the job in its own process with the GPU it was given.
    assert result["cuda_visible_devices"] == "0" and result["worker"].startswith("gpu0")
    assert result["reused"] is False and result["steps"] == 2
    assert any("SUCCESS" in line for line in lines)
    [run] = runs_of(running, job["job_id"])
    assert run.info.status == "FINISHED"
    shown = jobs.show(job["job_id"])
    assert shown["state"] == "SUCCESS" and shown["result"]["run_id"] == run.info.run_id
    assert job["job_id"] in [j["job_id"] for j in jobs.list()]


def test_same_job_submitted_twice_runs_once(running: Cluster) -> None:
    jobs = running.jobs()
    first = jobs.submit_diagnose(seconds=0.5, steps=2, job_id="diagnose-twice")
    second = jobs.submit_diagnose(seconds=0.5, steps=2, job_id="diagnose-twice")
    assert first["submitted"] and not second["submitted"]
    out = jobs.wait("diagnose-twice", timeout=90)
    # A redelivered / duplicated message (new task id, same job id) returns the recorded result.
    # Task ids carry the cluster's prefix: results outlive a test session in the shared Redis, and
    # the cluster's clean-up removes only prefixed keys (a fixed id once read a stale result).
    dup = jobs.app.tasks["ftctl.diagnose"].apply_async(
        ("diagnose-twice", 0.5, 2), task_id=f"diagnose-twice.1-{running.prefix}dup",
        queue=running.prefix + "gpu")
    again = dup.get(timeout=90)
    assert again["reused"] is True and again["run_id"] == out["run_id"]
    assert len(runs_of(running, "diagnose-twice")) == 1


def _raw(c: Cluster, jobs: Any, job_id: str, **publish: Any) -> None:
    """Publish a hand-made message on the gpu queue for a job that has a record."""
    from kombu import Connection, Exchange, Producer

    jobs.store.create(job_id, {"kind": "diagnose", "task_id": publish["headers"]["id"], "state": "PENDING",
                               "args": {"seconds": 0, "steps": 1}, "queue": c.prefix + "gpu"})
    q = c.prefix + "gpu"
    with Connection(c.broker_url) as conn:
        Producer(conn).publish(exchange=Exchange(q, type="direct"), routing_key=q, declare=[], **publish)


def test_bad_messages_fail_their_job_and_the_worker_keeps_serving(running: Cluster) -> None:
    jobs = running.jobs()
    gpu = running.prefix + "gpu"
    # Unknown task name.
    jobs.store.create("bad-name", {"kind": "diagnose", "task_id": f"bad-name.1-{running.prefix}", "state": "PENDING"})
    jobs.app.send_task("ftctl.no_such_task", args=[1], task_id=f"bad-name.1-{running.prefix}", queue=gpu)
    # Bad arguments: wrong types, then a missing argument.
    jobs.store.create("bad-args", {"kind": "diagnose", "task_id": f"bad-args.1-{running.prefix}", "state": "PENDING"})
    jobs.app.send_task("ftctl.diagnose", args=["bad-args", "soon", 0], task_id=f"bad-args.1-{running.prefix}", queue=gpu)
    jobs.store.create("few-args", {"kind": "diagnose", "task_id": f"few-args.1-{running.prefix}", "state": "PENDING"})
    jobs.app.send_task("ftctl.diagnose", args=["few-args"], task_id=f"few-args.1-{running.prefix}", queue=gpu)
    # Malformed: a pickle body (refused: JSON only) and a body that is not JSON at all.
    headers = {"task": "ftctl.diagnose", "lang": "py", "argsrepr": "", "kwargsrepr": ""}
    _raw(running, jobs, "pickled", body=b"\x80\x04K\x01.", content_type="application/x-python-serialize",
         content_encoding="binary", headers={**headers, "id": f"pickled.1-{running.prefix}"})
    _raw(running, jobs, "garbled", body=b"{not json", content_type="application/json",
         content_encoding="utf-8", headers={**headers, "id": f"garbled.1-{running.prefix}"})
    expect = {"bad-name": "no_such_task", "bad-args": "bad arguments", "few-args": "argument",
              "pickled": "JSON", "garbled": ""}
    for job_id, words in expect.items():
        j = wait_for(lambda job_id=job_id: (s := jobs.show(job_id))["state"] == "FAILURE" and s, 60,
                     f"{job_id} to fail")
        assert words in j["error"], (job_id, j)
    # ... and the same worker still serves.
    ok = jobs.submit_diagnose(seconds=0, steps=1)
    assert jobs.wait(ok["job_id"], timeout=60)["steps"] == 1
    assert running.procs[0].poll() is None


def test_cancel_and_retry(running: Cluster) -> None:
    jobs = running.jobs()
    job = jobs.submit_diagnose(seconds=6, steps=30)
    wait_for(lambda: jobs.show(job["job_id"]).get("progress", {}).get("step"), 60, "progress")
    assert jobs.cancel(job["job_id"])["cancelled"]
    wait_for(lambda: jobs.store.get(job["job_id"])["state"] == "CANCELLED"
             and jobs.store.lock_owner(job["job_id"]) is None, 60, "the running job to stop")
    [run] = runs_of(running, job["job_id"])
    assert run.info.status == "FAILED" and "cancelled" in run.data.tags["ftctl.failure"]
    retried = jobs.retry(job["job_id"])
    assert retried["submitted"] and retried["task_id"].split(".")[-1].startswith("2-")
    assert jobs.wait(job["job_id"], timeout=120)["steps"] == 30
    statuses = sorted(r.info.status for r in runs_of(running, job["job_id"]))
    assert statuses == ["FAILED", "FINISHED"]


def test_stale_copies_never_change_an_ended_jobs_record(running: Cluster) -> None:
    # A leftover message of the cancelled first submission, and a copy of the finished second one
    # (a message Redis restored late), arrive after the job ended: its record stays as it was.
    jobs = running.jobs()
    job = jobs.submit_diagnose(seconds=6, steps=30)["job_id"]
    wait_for(lambda: jobs.show(job).get("progress", {}).get("step"), 60, "progress")
    jobs.cancel(job)
    wait_for(lambda: jobs.store.lock_owner(job) is None, 60, "the cancelled delivery to stop")
    jobs.retry(job)
    out = jobs.wait(job, timeout=120)
    record = jobs.store.get(job)
    gpu = running.prefix + "gpu"
    for n, tag in ((1, "leftover"), (2, "restored")):
        copy = f"{job}.{n}-{running.prefix}{tag}"
        running.app().signature("ftctl.diagnose", args=(job, 6, 30)).apply_async(task_id=copy,
                                                                                   queue=gpu)
        wait_for(lambda c=copy: any(f"[{c}] {end}" in running.log("gpu")
                                    for end in ("succeeded", "ignored")), 60, f"the {tag} copy")
    assert jobs.store.get(job) == record and jobs.show(job)["state"] == "SUCCESS"
    assert jobs.show(job)["result"]["run_id"] == out["run_id"]
    assert len([r for r in runs_of(running, job) if r.info.status == "FINISHED"]) == 1


def test_sigkill_mid_job_then_a_new_worker_finishes_it_exactly_once(tmp_path: Path) -> None:
    require_redis()
    with cluster(tmp_path, FTCTL_VISIBILITY_TIMEOUT="4") as c:
        gpu = c.worker("gpu", name="gpu-a")
        jobs = c.jobs()
        job = jobs.submit_diagnose(seconds=4, steps=8)
        wait_for(lambda: (jobs.show(job["job_id"]).get("progress") or {}).get("step", 0) >= 2, 90,
                 "the job to be half way")
        c.stop(gpu, signal.SIGKILL)  # no warm shutdown: the message stays unacked in Redis
        c.worker("gpu", name="gpu-b")
        result = jobs.wait(job["job_id"], timeout=120)
        assert result["reused"] is False and result["steps"] == 8
        runs = runs_of(c, job["job_id"])
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # history shows the retry
        failed = next(r for r in runs if r.info.status == "FAILED")
        assert "worker died" in failed.data.tags["ftctl.failure"]
        assert jobs.store.get(job["job_id"])["attempts"] == 2
        assert "gpu-b" not in c.log("gpu-a") and "Task ftctl.diagnose" in c.log("gpu-b")


@pytest.mark.slow
def test_poison_job_is_failed_after_max_attempts(tmp_path: Path) -> None:
    require_redis()
    with cluster(tmp_path, FTCTL_VISIBILITY_TIMEOUT="4") as c:
        gpu = c.worker("gpu", name="gpu-a")
        jobs = c.jobs()
        job = jobs.submit_diagnose(seconds=10, steps=10)
        wait_for(lambda: (jobs.show(job["job_id"]).get("progress") or {}).get("step"), 90, "start")
        c.stop(gpu, signal.SIGKILL)
        c.worker("gpu", name="gpu-b", FTCTL_MAX_ATTEMPTS="1")  # one death is already too many
        j = wait_for(lambda: (s := jobs.show(job["job_id"]))["state"] == "FAILURE" and s, 120, "poison")
        assert "started 2 times" in j["error"] and "ftctl jobs retry" in j["error"]


def test_redis_killed_with_jobs_queued_loses_none(tmp_path: Path) -> None:
    with private_redis(tmp_path) as (port, restart), cluster(
            tmp_path, broker_url=f"redis://127.0.0.1:{port}/0") as c:
        jobs = c.jobs()
        queued = [jobs.submit_diagnose(seconds=0, steps=1)["job_id"] for _ in range(3)]
        restart()  # SIGKILL + restart: the queue survives only through the AOF
        c.worker("gpu")
        for job_id in queued:
            assert jobs.wait(job_id, timeout=120)["steps"] == 1
        # The worker survives a dropped connection and keeps serving jobs queued afterwards.
        restart()
        late = c.jobs().submit_diagnose(seconds=0, steps=1)["job_id"]
        assert c.jobs().wait(late, timeout=120)["steps"] == 1
        assert all(len(runs_of(c, j)) == 1 for j in [*queued, late])
        assert json.loads(json.dumps(c.jobs().list()))  # records are plain JSON


def test_time_limits_hold_in_the_solo_pool(tmp_path: Path) -> None:
    # Celery's own time limits do not apply in the solo pool: ftctl enforces them. A job that
    # keeps reporting stops at its soft limit; one stuck past the hard limit ends its worker, and
    # the redelivered message is failed at once instead of hanging the next worker too.
    from service.errors import ServiceError

    require_redis()
    # Limits with headroom for a loaded CI machine (the MLflow store opens inside the limit).
    with cluster(tmp_path, FTCTL_MAX_JOB_SECONDS="20", FTCTL_HARD_LIMIT_MARGIN="10",
                 FTCTL_VISIBILITY_TIMEOUT="4") as c:
        gpu = c.worker("gpu", name="gpu-a")
        jobs = c.jobs()
        soft = jobs.submit_diagnose(seconds=90, steps=180)
        with pytest.raises(ServiceError, match="soft time limit of 20 s"):
            jobs.wait(soft["job_id"], timeout=120)
        stuck = jobs.submit_diagnose(seconds=120, steps=1)  # no progress for two minutes
        wait_for(lambda: gpu.poll() is not None, 120, "the stuck job's worker to stop itself")
        assert gpu.returncode == 70
        j = jobs.show(stuck["job_id"])
        assert j["state"] == "FAILURE" and "hard time limit of 30 s" in j["error"]
        c.worker("gpu", name="gpu-b")  # gets the redelivered message: fails it, keeps serving
        wait_for(lambda: "Task ftctl.diagnose" in c.log("gpu-b"), 60, "the redelivery")
        j = jobs.show(stuck["job_id"])
        assert j["state"] == "FAILURE" and "hard time limit" in j["error"] and "jobs retry" in j["error"]
        ok = jobs.submit_diagnose(seconds=0.2, steps=2)
        assert jobs.wait(ok["job_id"], timeout=60)["steps"] == 2
