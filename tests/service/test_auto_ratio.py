"""`--replay-ratio auto` in-process on the tiny world: the ladder, the climb while the gate fails
on held-out forgetting, the stop when it fails on something replay cannot fix, and the
calibration from the line's own history. (On the workers: tests/service/test_celery_release.py.)"""

from __future__ import annotations

from pathlib import Path

from tests.service.test_release_cli import ok_json, tracker


def test_auto_ratio_retries_larger_ratios_while_the_gate_fails_on_forgetting(tmp_path: Path) -> None:
    from service.release.auto import calibrate, ladder_from, release_auto
    from service.release.request import ReleaseRequest
    from service.settings import load_settings

    assert ladder_from(1 / 32, 0.25) == [1 / 32, 1 / 16, 1 / 8, 1 / 4]
    assert ladder_from(0.05, 1 / 8) == [0.05, 1 / 16, 1 / 8]
    ws = tmp_path / "ws"  # a line of its own: calibration reads the line's release history
    ok_json(ws, "init", "--world", "tiny")
    t = tracker(ws)
    assert calibrate(t, default=1 / 32).start == 1 / 32  # no history: the settings' ratio
    # A held-out budget nothing meets: every attempt fails on forgetting, up to the cap.
    strict = load_settings(overrides={"workspace": ws, "gate_max_heldout_forgetting": 1e-9}, env={})
    r = release_auto(strict, ReleaseRequest(task="py_io", method="random", register=False), cap=1 / 16)
    attempts = r["auto"]["attempts"]
    assert [a["ratio"] for a in attempts] == [1 / 32, 1 / 16] and not r["gate"]["passed"]
    assert attempts[1]["budget"] >= attempts[0]["budget"]
    auto_run = t.get_run(r["auto"]["run_id"])
    kids = t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{auto_run.info.run_id}'")
    assert {k.info.run_id for k in kids} == {a["run_id"] for a in attempts}  # nested attempts
    assert auto_run.data.tags["ftctl.gate"] == "failed"
    # A release that passes stops at once; afterwards calibration starts from what passed.
    easy = load_settings(overrides={"workspace": ws, "gate_require_task_gain": False}, env={})
    r = release_auto(easy, ReleaseRequest(task="py_io", method="random", register=True, promote=False))
    assert len(r["auto"]["attempts"]) == 1 and r["gate"]["passed"]
    cal = calibrate(t, default=0.2)
    assert cal.start <= 1 / 32 and "passing releases" in cal.note
    # A failure more replay cannot fix (the task did not improve) is not retried.
    no_gain = load_settings(overrides={"workspace": ws, "steps": 1, "lr": 1e-12}, env={})
    r = release_auto(no_gain, ReleaseRequest(task="py_io", method="random", register=False), cap=1 / 8)
    assert len(r["auto"]["attempts"]) == 1 and "task loss did not improve" in r["gate"]["reasons"][0]
