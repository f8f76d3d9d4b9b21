"""The statistics policy for a new champion, on a real gpu worker: after a promotion the scheduled
tick re-measures `stats_refresh` rows (the stalest, cheapest first) on the new @champion — not
one per task — the worker measures them, the next tick finds nothing due, and the champion's
matrix is the refreshed rows plus the base's rows of the other tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.infra.workers import cluster, require_redis
from tests.service.test_celery_release import init_line, tracker

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

TASKS = ("py_io", "bible_law", "translate_fra")


def write_catalogue(root: Path) -> Path:
    """Three tiny-world tasks as a user catalogue (one JSONL file per task)."""
    from training.world import load_world

    world = load_world("tiny")
    root.mkdir()
    for name in TASKS:
        t = world.tasks[name]
        (root / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": e.prompt, "response": e.response}) + "\n" for e in [*t.train, *t.test]))
    return root


def test_a_promotion_refreshes_stats_refresh_rows_on_the_worker(tmp_path: Path) -> None:
    require_redis()
    from service.pipeline.inputs import load_upstream
    from service.pipeline.stats import collect_stats
    from service.release.request import ReleaseRequest, release_new_task
    from service.tracking.matrix import choose_rows
    from service.tracking.registry import CHAMPION, Registry
    from service.tracking.store import TAG

    catalogue = write_catalogue(tmp_path / "tasks")
    with cluster(tmp_path, FTCTL_TASKS=str(catalogue), FTCTL_STATS_BATCH="10",
                 FTCTL_STATS_REFRESH="2") as c:
        init_line(c)
        s = c.settings()
        base = Registry(tracker(c)).champion().version
        assert all("error" not in r for r in collect_stats(s, list(TASKS), workers=1))
        rel = release_new_task(s, ReleaseRequest(task=TASKS[0], method="random", promote=False))
        Registry(tracker(c)).set_alias(CHAMPION, rel["version"])  # the new champion

        c.worker("gpu")
        app = c.app()
        tick = app.tasks["ftctl.stats_when_idle"]()
        assert tick["action"] == "submitted" and tick["missing"] == 0 and len(tick["jobs"]) == 2
        jobs = c.jobs()
        for j in tick["jobs"]:
            jobs.wait(j, timeout=600)
        digest = load_upstream(s).digest
        on_champion = {r.data.tags[TAG + "task"] for r in tracker(c).find_runs(
            {TAG + "kind": "stats", TAG + "role": "job", TAG + "digest": digest,
             TAG + "base_version": str(rel["version"])})}
        assert on_champion == set(tick["tasks"])
        idle = app.tasks["ftctl.stats_when_idle"]()
        assert idle["action"] == "idle" and idle["refresh_due"] == 0
        rows = choose_rows(tracker(c), load_upstream(s), base_version=rel["version"])
        versions = sorted(r.data.tags[TAG + "base_version"] for r in rows.runs)
        assert len(rows.runs) == 3 and versions == sorted([str(base)] + [str(rel["version"])] * 2)
        assert "2 measured on version" in rows.note and "1 on its ancestors" in rows.note
