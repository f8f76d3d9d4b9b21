"""`python -m bench.science --quick` end to end (the CI smoke of the study reproduction): every
stage runs through the product's pipeline on the tiny world and every table comes out finite.
The goals themselves are figures in the README, not assertions here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_quick_science_produces_every_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench.science", "--quick", "--out", str(out),
         "--workspace", str(tmp_path / "ws"), "--base-cache", str(tmp_path / "base"),
         "--ledger", str(tmp_path / "ledger")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["goals"]) >= {"rank3_r2_at_least_0.7", "best_rmse_at_most_0.85x_additive",
                                     "f1_20_points_over_semantic_only",
                                     "replay_15pct_below_random_p_0.01", "probes_at_most_1pct_of_full"}
    r = json.loads((out / "results.json").read_text())

    assert r["matrix"]["tasks"] == 8 and not r["matrix"]["failed"]
    assert r["matrix"]["examples"] == 210 and len(r["matrix"]["sources"]) == 7
    r2 = r["lowrank"]["report"]["svd_r2"]
    assert all(finite(r2[str(k)]) for k in range(1, 11)) and r2["1"] <= r2["3"] <= r2["10"]
    assert len(r["per_source"]["tasks"]) == 8
    assert all(finite(v) for t in r["per_source"]["tasks"] for v in t["per_source"].values())

    pred = r["prediction"]
    assert set(pred) == {"main", "k=5", "k=10", "leverage", "family"}
    assert set(pred["main"]["results"]) == {"additive", "knn", "knn_pearson", "mf", "als", "semantic",
                                            "semantic_only", "random"}
    for report in pred.values():
        for res in report["results"].values():
            assert all(finite(res["metrics"][m]["mean"]) for m in
                       ("rmse_x100", "f1_median", "roc_auc_median", "precision_at_0.05", "spearman"))

    rep = r["replay"]
    assert len(rep["cells"]) == 12 and not rep["summary"]["failed"]
    rows = rep["summary"]["budgets"]["0.03125"]
    assert set(rows) == {"none", "random", "random (online)", "oracle", "mf (online)", "mf (offline)"}
    assert finite(rows["mf (online)"]["vs_random_online"]["t_p"])
    assert all(finite(v["heldout_mean"]) and finite(v["task_loss_mean"]) for v in rows.values())
    assert all(finite(rows[k]["vs_random"]["t_p"]) for k in ("oracle", "mf (online)", "mf (offline)"))
    assert rows["none"]["budget"] == 0 or rows["none"]["heldout_mean"] > 0
    # The oracle and the offline mode reused the no-replay release's fine-tune of each pair.
    reused = [c for c in rep["cells"] if c["strategy"] == "oracle"
              or (c["strategy"] == "mf" and c["mode"] == "offline")]
    assert reused and all("plain fine-tune reused" in (c["note"] or "") for c in reused)

    main = pred["main"]["splits"]  # the main table over random test-task splits (2 in --quick)
    assert main["splits"] == [0, 1] and main["control"] == "additive"
    assert finite(main["vs_control"]["mf"]["rmse_x100"]["t_p"])
    null = r["lowrank"]["null_r2"]  # R² beside its permutation null
    assert all(finite(null[str(k)]["null_mean"]) for k in range(1, 11))

    curve = r["budget"]  # the budget curve (here at one ratio: the replay stage's releases reused)
    assert curve["complete"] and not curve["summary"]["failed"]
    at = curve["summary"]["ratios"]["0.03125"]
    assert set(at) >= {"none", "random", "mf"} and at["mf"]["distinct_mean"] <= at["mf"]["budget_mean"]

    temp = r["temperature"]["summary"]
    assert set(temp) == {"0.1", "1"} and len(r["temperature"]["cells"]) == 2
    assert all(finite(v["reduction_vs_random"]) for rows in temp.values() for v in rows.values())
    assert set(temp["1"]) == {"mf (online)", "oracle"}

    cost = r["cost"]
    assert cost["k"] == 30 and finite(cost["probe_share_of_full"]) and cost["full_measure_seconds"] > 0
    md = (out / "results.md").read_text()
    for heading in ("**Matrix.**", "**Low rank**", "**Prediction**", "**k sweep**", "**Replay.**",
                    "**Sampling temperature**", "**Probe cost.**", "**Goals**"):
        assert heading in md
    for png in ("heatmap.png", "r2_by_rank.png", "replay.png", "k_sweep.png"):
        assert (out / png).stat().st_size > 1000

    # The ledger: a new workspace (another machine) restores the 8 rows, the base's NLLs and the
    # finished curve cells, and measures nothing again.
    again = subprocess.run(
        [sys.executable, "-m", "bench.science", "--quick", "--stages", "matrix,budget",
         "--out", str(tmp_path / "out2"), "--workspace", str(tmp_path / "ws2"),
         "--base-cache", str(tmp_path / "base"), "--ledger", str(tmp_path / "ledger")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    r2 = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert sorted(r2["ledger"]["imported"]) == sorted(t["task"] for t in r["per_source"]["tasks"])
    assert "collecting" not in again.stderr and "measuring the base model:" not in again.stderr
    assert "0 releases" in again.stderr and len(r2["budget"]["cells"]) == len(curve["cells"])
