"""A chain of releases on the tiny world, in-process: each release measured against its parent and
the line's base, the earlier tasks' retention, the chain budgets of the gate, and the figures on
the registry versions (`release list`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.test_release_cli import ok_json, tracker


def test_a_chain_measures_drift_from_the_base_and_earlier_task_retention(tmp_path: Path) -> None:
    from service.release.chain import ancestry
    from service.release.request import ReleaseRequest, release_new_task
    from service.settings import load_settings
    from service.tracking.registry import Registry

    ws = tmp_path / "ws"
    ok_json(ws, "init", "--world", "tiny")
    s = load_settings(overrides={"workspace": ws, "gate_require_task_gain": False}, env={})
    a = release_new_task(s, ReleaseRequest(task="py_io", method="random"))
    assert a["champion"] and a["base_version"] == 1
    # From the base, the base is the parent: the two figures are one.
    assert a["heldout_vs_base"] == pytest.approx(a["heldout_forgetting"], abs=1e-9)
    assert a["retention"] == []  # the base learned no task
    b = release_new_task(s, ReleaseRequest(task="bible_law", method="random"))
    assert b["parent_version"] == a["version"] and b["base_version"] == 1
    # Means over the same held-out examples add up: (B − base) = (B − A) + (A − base).
    assert b["heldout_vs_base"] == pytest.approx(b["heldout_forgetting"] + a["heldout_vs_base"], abs=1e-4)
    [ret] = b["retention"]
    assert (ret["version"], ret["task"]) == (a["version"], "py_io")
    assert ret["loss_at_release"] == pytest.approx(a["task_loss_after"])
    assert ret["increase"] == pytest.approx(ret["loss_now"] - ret["loss_at_release"])
    # The figures on the run (metrics + table) and on the version (what `release list` shows).
    t = tracker(ws)
    run = t.get_run(b["run_id"])
    assert run.data.metrics["earlier_tasks"] == 1
    assert run.data.metrics["heldout_forgetting_vs_base"] == pytest.approx(b["heldout_vs_base"])
    table = t.load_dict(b["run_id"], "chain/retention.json")
    assert table["earlier_tasks"][0]["task"] == "py_io"
    reg = Registry(t)
    v = reg.get(b["version"])
    assert float(v.tags["ftctl.heldout_vs_base"]) == pytest.approx(b["heldout_vs_base"], abs=1e-4)
    assert [x.version for x in ancestry(reg, v)] == [b["version"], a["version"], 1]
    listed = ok_json(ws, "release", "list")
    assert listed[-1]["tags"]["ftctl.earlier_loss_increase_max"]
    # The chain budgets: a third release judged against the base and the two earlier tasks.
    strict = s.replace(gate_max_cumulative_forgetting=1e-9, gate_max_earlier_task_loss_increase=1e-9)
    c = release_new_task(strict, ReleaseRequest(task="translate_fra", method="random", promote=False))
    reasons = " ".join(c["gate"]["reasons"])
    assert not c["gate"]["passed"] and "vs the base (version 1)" in reasons
    assert {r["task"] for r in c["retention"]} == {"py_io", "bible_law"}
    worse = [r for r in c["retention"] if r["increase"] > 1e-9]
    assert all(f"earlier task {r['task']}" in reasons for r in worse)
    # Off means off: the same figures, no chain reason.
    off = s.replace(gate_max_cumulative_forgetting=0.0, gate_max_earlier_task_loss_increase=0.0)
    d = release_new_task(off, ReleaseRequest(task="translate_fra", method="random", promote=False, seed=1))
    assert d["heldout_vs_base"] is not None
    assert not any("vs the base" in x or "earlier task" in x for x in d["gate"]["reasons"])


def test_negative_chain_budgets_are_refused() -> None:
    from service.errors import ServiceError
    from service.settings import Settings

    with pytest.raises(ServiceError, match="gate_max_cumulative_forgetting must be >= 0"):
        Settings(gate_max_cumulative_forgetting=-1.0)
    with pytest.raises(ServiceError, match="gate_max_earlier_task_loss_increase must be >= 0"):
        Settings(gate_max_earlier_task_loss_increase=-0.1)
