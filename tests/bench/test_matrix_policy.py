"""bench.matrix_policy's scoring on planted versions (known answers); the end-to-end run on the
tiny world is in test_chain_bench.py (slow)."""

from __future__ import annotations

import pytest

from tests.forgetting.test_staleness import planted


def test_evaluate_policies_on_planted_versions() -> None:
    """bench.matrix_policy's scoring on planted rows: a version that did not move is predicted as
    well by its ancestor's rows as by its own; refreshed rows sit between."""
    from bench.matrix_policy import evaluate_policies

    old, new = planted(drift=1.0, m=8, n=300)
    tasks = [f"t{i}" for i in range(8)]
    rows = {1: dict(zip(tasks, old, strict=True)), 2: dict(zip(tasks, old, strict=True)),
            3: dict(zip(tasks, new, strict=True))}
    out = evaluate_policies(rows, base=1, chain=[2, 3], tasks=tasks, base_tasks=tasks, seeds=(0,))
    same, moved = out["depths"]
    assert same["means"]["ancestor"]["spearman"] == pytest.approx(same["means"]["fresh"]["spearman"])
    assert same["row_rank_correlation_with_base"]["mean"] == pytest.approx(1.0)
    assert moved["vs_fresh"]["ancestor"]["spearman"]["diff"] < -0.1
    assert moved["means"]["refresh-4"]["spearman"] > moved["means"]["ancestor"]["spearman"]
    assert out["cost_stats_jobs_per_promotion"] == {"fresh": 8, "refresh-1": 1, "refresh-2": 2,
                                                    "refresh-4": 4, "ancestor": 0}
