"""A chain of releases on the tiny world, in-process: each release measured against its parent and
the line's base, the earlier tasks' retention, the chain budgets of the gate, and the figures on
the registry versions (`release list`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.test_release_cli import ok_json, tracker


def test_a_chain_measures_drift_from_the_base_and_earlier_task_retention(tmp_path: Path) -> None:
    from service.release.request import ReleaseRequest, release_new_task
    from service.release.series import release_chain
    from service.settings import load_settings
    from service.tracking.lineage import ancestry
    from service.tracking.registry import Registry

    ws = tmp_path / "ws"
    ok_json(ws, "init", "--world", "tiny")
    s = load_settings(overrides={"workspace": ws, "gate_require_task_gain": False}, env={})
    # Two links through the CLI: each from the champion the one before it left.
    chain = ok_json(ws, "release", "chain", "py_io", "bible_law", "--method", "random")
    a, b = chain["releases"]
    assert chain["complete"] and chain["promoted"] == 2
    assert a["champion"] and a["base_version"] == 1
    # From the base, the base is the parent: the two figures are one.
    assert a["heldout_vs_base"] == pytest.approx(a["heldout_forgetting"], abs=1e-9)
    assert a["retention"] == []  # the base learned no task
    assert b["parent_version"] == a["version"] and b["base_version"] == 1
    assert chain["summary"]["last_version"] == b["version"] and chain["start_version"] == 1
    assert chain["summary"]["heldout_vs_base"] == pytest.approx(b["heldout_vs_base"])
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
    # The model-line view: the lineage base → a → b with figures and gate margins, on the run
    # and from `release line`.
    line = ok_json(ws, "release", "line")
    assert [p["version"] for p in line] == [1, a["version"], b["version"]]
    assert [p["task"] for p in line] == ["base", "py_io", "bible_law"] and "champion" in line[-1]["aliases"]
    assert line[-1]["vs_base"] == pytest.approx(b["heldout_vs_base"], abs=1e-4)
    assert line[-1]["margins"]["vs_base"] == pytest.approx(s.gate_max_cumulative_forgetting - line[-1]["vs_base"])
    assert line[1]["earlier_max"] is None and line[-1]["earlier_max"] == pytest.approx(ret["increase"], abs=1e-4)
    assert t.load_dict(b["run_id"], "chain/line.json") == line
    assert "figures/model_line.png" in {f.path for f in t.client.list_artifacts(b["run_id"], "figures")}
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
    # Earlier-task replay: part of the budget from the chain's earlier tasks' logged train
    # candidates (py_io, bible_law), within the same budget.
    assert t.load_dict(a["run_id"], "task/replay_candidates.json")["examples"]
    e = release_new_task(s.replace(earlier_replay_share=0.5),
                         ReleaseRequest(task="translate_fra", method="random", promote=False, seed=2))
    eplan = t.load_dict(e["run_id"], "replay/plan.json")
    assert e["earlier_replay"] == eplan["earlier_tasks"] == max(1, round(0.5 * e["budget"]))
    assert eplan["distinct"] <= e["budget"] and e["replayed"] <= e["budget"]
    assert {k for k in eplan["by_source"] if k.startswith("earlier")} <= {
        "earlier task py_io", "earlier task bible_law"}
    assert e["job_id"] != d["job_id"]
    # The release run itself carries what a reviewer opens: table, figures, plan, and the
    # comparison with the other releases of the same task from the same parent (c).
    arts = {f.path for f in t.client.list_artifacts(d["run_id"], "figures")}
    assert {"figures/heldout_vs_controls.png", "figures/forgetting_hist.png"} <= arts
    top = t.load_dict(d["run_id"], "forgetting/top_forgotten.json")
    assert "text" in top["columns"] and top["data"]
    plan = t.load_dict(d["run_id"], "replay/plan.json")
    assert plan["distinct"] == d["replayed"] <= d["budget"] and sum(plan["by_source"].values()) == plan["distinct"]
    comp = t.load_dict(d["run_id"], "comparison/heldout_vs_controls.json")["releases"]
    assert comp[0]["heldout"] == pytest.approx(d["heldout_forgetting"])
    assert any(r["run_id"] == c["run_id"] for r in comp[1:])
    # The experiment opens on its training runs in the MLflow 3 UI, not the GenAI view.
    exp = t.client.get_experiment(t.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # A rerun of the same chain from the same start reuses every finished link (the same
    # versions, nothing trained); stop_on_failure ends at the first failed gate.
    again = release_chain(s, ["py_io", "bible_law"], ReleaseRequest(task="", method="random", parent_version=1))
    assert [r["version"] for r in again["releases"]] == [a["version"], b["version"]]
    assert [r["run_id"] for r in again["releases"]] == [a["run_id"], b["run_id"]]
    stopped = release_chain(strict, ["wn_noun_food", "py_io"],
                            ReleaseRequest(task="", method="random", promote=False), stop_on_failure=True)
    assert not stopped["complete"] and len(stopped["releases"]) == 1
    assert stopped["summary"]["gate_failures"] == ["wn_noun_food"]


def test_negative_chain_budgets_are_refused() -> None:
    from service.errors import ServiceError
    from service.settings import Settings

    with pytest.raises(ServiceError, match="gate_max_cumulative_forgetting must be >= 0"):
        Settings(gate_max_cumulative_forgetting=-1.0)
    with pytest.raises(ServiceError, match="gate_max_earlier_task_loss_increase must be >= 0"):
        Settings(gate_max_earlier_task_loss_increase=-0.1)
