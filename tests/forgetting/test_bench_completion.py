"""Smoke test of bench.completion's scenario at tiny sizes: every figure it prints is produced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import completion as bench


@pytest.mark.parametrize("large", [False, True])
def test_scenario_reports_every_method_and_the_goals(tmp_path: Path, large: bool) -> None:
    res = bench.scenario(
        30,
        600,
        heavy=large,  # the heavy-tailed draw on the memmap path, the Gaussian one in RAM
        seeds=[0, 1],
        n_test=4,
        n_refit=2,
        large=large,
        workdir=str(tmp_path),
        knn_k_sweep=not large,
    )
    json.dumps(res)  # serialisable as printed
    assert res["memmap"] is large and res["known_rows"] == 26 and res["test_tasks"] == 4
    assert list(res["methods"]) == list(bench.METHODS)
    for name, r in res["methods"].items():
        assert 0 < r["rmse_x100"] < 100 and 0 <= r["precision_at_1pct"] <= 1, name
        assert 0 <= r["f1_median"] <= 1 and r["fold_in_tasks_timed"] == 8
        assert 0 < r["fold_in_ms_per_task"] <= r["fold_in_ms_max"]
        assert r["fold_in_peak_traced_mb"] > 0  # the memory pass ran and saw the output row
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] >= 1
        g = r["goals"]
        assert isinstance(g["fold_in_under_50ms_per_task"], bool)
        verdict = g["fold_in_100x_faster_than_refit_at_equal_or_better_rmse"]
        if r["refit_ms_per_task"] is None:
            assert verdict is None and r["refit_note"]
        else:
            assert isinstance(verdict, bool) and r["refit_tasks"] == (1 if large else 2)
            assert verdict == (
                r["refit_over_fold_in_time"] >= bench.GOAL_SPEEDUP
                and g["rmse_fold_in_over_refit"] <= 1 + bench.RMSE_TOLERANCE
            )
    assert set(res["goals"]["fold_in_under_50ms_per_task"]) == set(bench.METHODS)
    assert res["goals"]["applies_to_50ms_goal"] is False
    if large:
        assert res["methods"]["als"]["fit_note"].startswith("cheaper fit")
    else:
        assert set(res["knn_pearson_k"]) == {"10", "20", "40"}
    # the planted structure is found: MF beats the additive baseline by a wide margin
    assert res["methods"]["mf"]["rmse_x100"] < 0.8 * res["methods"]["additive"]["rmse_x100"]


def test_goals_booleans_follow_the_definitions() -> None:
    base = {
        "fold_in_ms_per_task": 0.5,
        "refit_ms_per_task": 100.0,
        "refit_over_fold_in_time": 200.0,
    }
    ok = bench.goals(
        base | {"fold_in_rmse_x100_same_tasks": 5.0, "refit_rmse_x100_same_tasks": 5.0}
    )
    assert ok["fold_in_100x_faster_than_refit_at_equal_or_better_rmse"] is True
    worse = bench.goals(
        base | {"fold_in_rmse_x100_same_tasks": 5.2, "refit_rmse_x100_same_tasks": 5.0}
    )
    assert worse["fold_in_100x_faster_than_refit_at_equal_or_better_rmse"] is False
    slow = bench.goals(
        {
            "fold_in_ms_per_task": 60.0,
            "refit_ms_per_task": None,
            "refit_lower_bound_ms_per_task": 600.0,
        }
    )
    assert slow["fold_in_under_50ms_per_task"] is False
    assert slow["fold_in_100x_faster_than_refit_at_equal_or_better_rmse"] is None
    assert slow["fold_in_100x_faster_than_refit_lower_bound"] is False


def test_large_matrix_is_reopened_read_only(tmp_path: Path) -> None:
    p = bench._matrix(6, 50, heavy=False, large=True, workdir=str(tmp_path))
    assert isinstance(p.z, np.memmap) and not p.z.flags.writeable
    assert isinstance(p.z[:4], np.memmap)  # the contiguous known-rows slice stays mapped
