"""Celery beat + the inbox, for real: `ftctl scheduler` (beat) and a cpu worker on Redis turn a
dataset dropped into the inbox into a release job from the current @champion, one at a time;
a second scheduler refuses to start. (The release itself running on a gpu worker is in
test_celery_release.py.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.infra.workers import Cluster, cluster, require_redis, wait_for

pytestmark = pytest.mark.integration


def register_champion(c: Cluster) -> int:
    """A registered @champion (what `ftctl init` leaves); the scan only needs its version."""
    from service.tracking.registry import CHAMPION, Registry
    from service.tracking.store import Tracker

    model = c.tmp / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    tracker = Tracker(c.settings())
    with tracker.run("init") as run:
        run.log_artifacts(model, "model")
    registry = Registry(tracker)
    v = registry.register(run.run_id, "model", {})
    registry.set_alias(CHAMPION, v.version)
    return v.version


def release_jobs(jobs: Any) -> list[dict[str, Any]]:
    return [j for j in jobs.list() if j["kind"] == "release"]


def test_beat_turns_inbox_items_into_releases_one_at_a_time(tmp_path: Path) -> None:
    require_redis()
    with cluster(tmp_path, FTCTL_SCHEDULE_INBOX="1") as c:
        version = register_champion(c)
        c.worker("cpu")
        c.start("scheduler", name="beat", ready="beat: Starting")
        second = subprocess.run([*c.cmd, "scheduler"], env=c.env(), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 1 and "another scheduler is running" in second.stderr

        # A one-row dataset is refused before any job: it lands in failed/ with the reason.
        inbox = c.workspace / "inbox"
        tiny = tmp_path / "one_row.jsonl"
        tiny.write_text('{"prompt": "q", "response": "a"}\n')
        subprocess.run([*c.cmd, "inbox", "add", str(tiny)], env=c.env(), check=True, timeout=120)
        why = wait_for(lambda: (f := inbox / "failed" / "one_row.jsonl.error.txt").exists()
                       and f.read_text(), 60, "the one-row item to be refused")
        assert "1 train and 0 test examples" in why or "train split is empty" in why, why
        assert not release_jobs(c.jobs())  # the refused item made no job
        data = tmp_path / "new_task.jsonl"
        data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(30)))
        added = subprocess.run([*c.cmd, "inbox", "add", str(data)], env=c.env(),
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        jobs = c.jobs()
        [job] = wait_for(lambda: release_jobs(jobs), 60, "the inbox item to become a release job")
        args = jobs.show(job["job_id"])["args"]["request"]
        assert args["parent_version"] == version and args["name"] == "inbox:new_task.jsonl"
        assert [p.name for p in (inbox / "processing").iterdir()] == ["new_task.jsonl"]
        # Its first stage ran on the cpu worker; its fine-tune now waits for a gpu worker.
        wait_for(lambda: jobs.store.queue_length(c.prefix + "gpu") == 1, 60, "the gpu stage to queue")

        # A second item waits while the first release is open ...
        (inbox / "second.task.json").write_text('{"task": "bible_gospels"}')
        time.sleep(5)
        assert len(release_jobs(jobs)) == 1
        # ... and goes once the first has ended (here: cancelled; it lands in failed/).
        jobs.cancel(job["job_id"])
        wait_for(lambda: len(release_jobs(jobs)) == 2, 60, "the second item to be released")
        assert (inbox / "failed" / "new_task.jsonl").exists()
        assert [p.name for p in (inbox / "processing").iterdir()] == ["second.task.json"]


def test_statistics_jobs_are_queued_only_when_the_gpu_is_idle(tmp_path: Path) -> None:
    """The beat-triggered task body, called directly (no worker): it talks to the real Redis."""
    require_redis()
    with cluster(tmp_path, FTCTL_STATS_BATCH="2") as c:
        register_champion(c)
        app = c.app()
        first = app.tasks["ftctl.stats_when_idle"]()
        assert first["action"] == "submitted" and len(first["jobs"]) == 2
        from training.world import load_world

        assert first["missing"] == len(load_world("tiny").tasks)  # no full row yet
        jobs = c.jobs()
        assert {jobs.show(j)["kind"] for j in first["jobs"]} == {"stats"}
        assert jobs.store.queue_length(c.prefix + "gpu") == 2
        busy = app.tasks["ftctl.stats_when_idle"]()
        assert busy["action"] == "skipped" and "2 queued" in busy["reason"]
        refit = app.tasks["ftctl.refit"]()
        assert refit["action"] == "skipped" and "the matrix has 0" in refit["reason"]


def test_a_new_champion_gets_the_refresh_policys_rows_not_a_full_recollection(tmp_path: Path) -> None:
    """Rows of every task on the base; a promoted child becomes @champion: the tick queues
    `stats_refresh` jobs (the cheapest of the stalest rows), not one per task; once they are
    measured on it, nothing is due. FTCTL_STATS_REFRESH=-1 restores the full policy."""
    require_redis()
    from service.pipeline.inputs import load_upstream
    from service.tracking.registry import CHAMPION, Registry
    from service.tracking.store import TAG, Tracker
    from training.world import load_world

    tasks = sorted(load_world("tiny").tasks)
    with cluster(tmp_path, FTCTL_STATS_BATCH="50") as c:
        base = register_champion(c)
        tracker = Tracker(c.settings())
        digest = load_upstream(c.settings()).digest

        def row(task: str, version: int, seconds: float) -> None:
            with tracker.run(f"stats:{task}", tags={
                    TAG + "kind": "stats", TAG + "role": "job", TAG + "digest": digest,
                    TAG + "row": "full", TAG + "task": task, TAG + "base_version": str(version)}) as run:
                run.log_metrics({"train_seconds": seconds})

        for i, t in enumerate(tasks):
            row(t, base, 100.0 - i)  # the last tasks are the cheapest
        registry = Registry(tracker)
        with tracker.run("child") as run:
            (c.tmp / "child").mkdir()
            (c.tmp / "child" / "config.json").write_text("{}")
            run.log_artifacts(c.tmp / "child", "model")
        child = registry.register(run.run_id, "model", {TAG + "parent_version": str(base)}).version
        registry.set_alias(CHAMPION, child)

        app = c.app()
        tick = app.tasks["ftctl.stats_when_idle"]()
        assert tick["action"] == "submitted" and tick["missing"] == 0
        assert tick["tasks"] == tasks[::-1][:4] and tick["refresh_due"] == 4  # default refresh: 4
        jobs = c.jobs()
        for j in tick["jobs"]:
            jobs.cancel(j)
        jobs.store.r.delete(c.prefix + "gpu")  # no worker here: drop the cancelled messages
        for t in tick["tasks"]:  # as if the refreshed rows were measured on the champion
            row(t, child, 1.0)
        idle = app.tasks["ftctl.stats_when_idle"]()
        assert idle["action"] == "idle" and idle["refresh_due"] == 0
        # Releases from the champion whose matrix check said stale: one is not enough (the check
        # is noisy); two of three are, and every row is due then.
        def release(check: str) -> None:
            with tracker.run("release:x", tags={TAG + "kind": "release", TAG + "role": "job",
                                                TAG + "base_version": str(child),
                                                TAG + "matrix_check": check}):
                pass

        release("stale")
        release("ok")
        assert app.tasks["ftctl.stats_when_idle"]()["action"] == "idle"
        release("stale")
        stale = app.tasks["ftctl.stats_when_idle"]()
        assert (stale["stale_checks"], stale["checked_releases"]) == (2, 3)
        assert stale["refresh_due"] == len(tasks) - 4
        assert set(stale["tasks"]) == set(tasks) - set(tick["tasks"])
        jobs.store.r.delete(c.prefix + "gpu")

    with cluster(tmp_path / "full", FTCTL_STATS_BATCH="50", FTCTL_STATS_REFRESH="-1") as c2:
        register_champion(c2)
        tracker = Tracker(c2.settings())
        v = Registry(tracker).champion().version
        for t in tasks[:3]:
            with tracker.run(f"stats:{t}", tags={
                    TAG + "kind": "stats", TAG + "role": "job", TAG + "digest": load_upstream(c2.settings()).digest,
                    TAG + "row": "full", TAG + "task": t, TAG + "base_version": str(v)}):
                pass
        full = c2.app().tasks["ftctl.stats_when_idle"]()
        assert full["missing"] == len(tasks) - 3 and len(full["jobs"]) == len(tasks) - 3
