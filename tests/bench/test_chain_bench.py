"""bench.chain: its figures and summary on planted chains (known answers), and (slow) the quick
run end to end on the tiny world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chain import chain_figures, chain_orders, summarize

TASKS = ["a", "b", "c", "d"]


def chain(strategy: str, order: int, forget: float) -> dict:
    """A planted chain: link i drifts `forget` more from the base; earlier task t ends with a
    loss increase of forget × (its distance from the end)."""
    tasks = chain_orders(TASKS, 2)[order]
    links = []
    for i, t in enumerate(tasks):
        retention = [{"version": j + 2, "task": tasks[j], "loss_at_release": 1.0,
                      "loss_now": 1.0 + forget * (i - j), "increase": forget * (i - j)} for j in range(i)]
        links.append({"task": t, "heldout_vs_base": forget * (i + 1), "task_loss_after": 1.0,
                      "retention": retention})
    return {"strategy": strategy, "order": order, "tasks": tasks, "links": links}


def test_orders_are_permutations_of_the_first() -> None:
    orders = chain_orders(TASKS, 3)
    assert orders[0] == TASKS and all(sorted(o) == sorted(TASKS) for o in orders)
    assert chain_orders(TASKS, 3) == orders  # seeded


def test_chain_figures_read_drift_bwt_and_final_losses() -> None:
    f = chain_figures(chain("mf", 0, 0.1))
    assert f["drift"] == pytest.approx([0.1, 0.2, 0.3, 0.4]) and f["final_drift"] == pytest.approx(0.4)
    assert f["increase"] == pytest.approx({"a": 0.3, "b": 0.2, "c": 0.1})
    assert f["bwt"] == pytest.approx(-0.2)  # BWT = −mean increase
    assert f["final_loss"]["d"] == 1.0 and f["mean_final_loss"] == pytest.approx((1.3 + 1.2 + 1.1 + 1.0) / 4)


def test_summary_compares_strategies_on_task_means() -> None:
    chains = [chain(s, o, f) for s, f in (("mf", 0.05), ("random", 0.1), ("none", 0.2)) for o in (0, 1)]
    chains.append({"strategy": "mf", "order": 9, "tasks": TASKS, "error": "boom"})
    with_earlier = summarize([*chains, *(chain("mf+earlier", o, 0.025) for o in (0, 1))])
    assert with_earlier["earlier_task_increase"]["mf+earlier_vs_mf"]["reduction"] == pytest.approx(0.5)
    out = summarize(chains)
    assert [c["error"] for c in out["failed"]] == ["boom"]
    assert out["strategies"]["mf"]["final_drift_mean"] == pytest.approx(0.2)
    assert out["strategies"]["none"]["bwt_mean"] < out["strategies"]["random"]["bwt_mean"] < out["strategies"]["mf"]["bwt_mean"]
    assert "mf+earlier_vs_mf" not in out["earlier_task_increase"]  # only pairs that ran
    c = out["earlier_task_increase"]["mf_vs_random"]
    # Every task that was not last in every order has an increase to compare.
    assert c["reduction"] == pytest.approx(0.5) and c["wins"] == c["n"] >= len(TASKS) - 1


@pytest.mark.slow
def test_quick_chain_bench_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.chain", "--quick", "--workers", "1",
                           "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["chains"]) == 6 and not res["summary"]["failed"]
    for c in res["chains"]:
        assert [x["parent_version"] for x in c["links"][1:]] == [x["version"] for x in c["links"][:-1]]
        assert len(c["links"][-1]["retention"]) == 2
    # The matrix policy on that workspace: rows measured again on each of the 3 links' versions.
    pol = subprocess.run([sys.executable, "-m", "bench.matrix_policy", "--quick", "--chain-out",
                          str(tmp_path), "--json"], capture_output=True, text=True, timeout=1800)
    assert pol.returncode == 0, pol.stderr[-3000:]
    out = json.loads((tmp_path / "matrix_policy.json").read_text())
    mf = next(c for c in res["chains"] if c["strategy"] == "mf" and c["order"] == 0)
    assert out["meta"]["versions"] == [x["version"] for x in mf["links"]]
    assert [d["depth"] for d in out["depths"]] == [1, 2, 3]
    for d in out["depths"]:
        assert len(d["tasks"]) == 6 and set(d["means"]) == {
            "ancestor", "fresh", "additive (ancestor)", "refresh-1", "refresh-2", "refresh-4"}
        assert all(-1 <= m["spearman"] <= 1 for m in d["means"].values())
    assert out["cost_stats_jobs_per_promotion"]["refresh-2"] == 2
