"""Known answers for forgetting.staleness on planted matrices: rows of a version that did not
move predict as well as fresh ones; once the example factors drift, fresh rows predict better
and the probe fit error says so; the refresh schedule is the documented one."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.staleness import refresh_versions, score_targets


def planted(drift: float, seed: int = 0, m: int = 24, n: int = 400, rank: int = 3):
    """Rows on the ancestor (U V^T) and on a later version (U V'^T, V' = V + drift x noise)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(m, rank))
    v = rng.normal(size=(n, rank))
    v2 = v + drift * rng.normal(size=(n, rank))
    noise = 0.05
    old = u @ v.T + noise * rng.normal(size=(m, n))
    new = u @ v2.T + noise * rng.normal(size=(m, n))
    return old, new


@pytest.mark.parametrize("method", ["mf", "additive"])
def test_no_drift_ancestor_rows_predict_like_fresh_ones(method: str) -> None:
    old, new = planted(drift=0.0)
    skip = list(range(len(new)))  # each target's own task is left out of the fit
    anc = score_targets(old, new, method=method, leave_out=skip)
    fresh = score_targets(new, new, method=method, leave_out=skip)
    for metric in ("spearman", "rmse_x100"):
        assert anc.mean(metric) == pytest.approx(fresh.mean(metric), rel=0.05, abs=0.02)
    if method == "mf":
        assert anc.mean("spearman") > 0.9  # rank 3 + noise: MF recovers the rows


def test_drift_makes_ancestor_rows_stale_and_the_probe_error_shows_it() -> None:
    old, new = planted(drift=1.0)
    skip = list(range(len(new)))
    anc = score_targets(old, new, leave_out=skip)
    fresh = score_targets(new, new, leave_out=skip)
    assert fresh.mean("spearman") > anc.mean("spearman") + 0.1
    assert fresh.mean("rmse_x100") < anc.mean("rmse_x100")
    assert anc.mean("probe_rmse_x100") > fresh.mean("probe_rmse_x100")  # visible without truth
    # Identical probes whatever the known rows: the comparison is paired.
    again = score_targets(old, new, leave_out=skip)
    np.testing.assert_array_equal(again.values["spearman"], anc.values["spearman"])


def test_leave_out_drops_the_targets_own_row() -> None:
    old, _ = planted(drift=0.0, m=6, n=120)
    with_own = score_targets(old, old, method="additive", k=10, seeds=(0,))
    without = score_targets(old, old, method="additive", k=10, seeds=(0,), leave_out=range(6))
    assert not np.allclose(with_own.values["rmse_x100"], without.values["rmse_x100"])


def test_refresh_versions_follows_the_schedule() -> None:
    tasks = ["a", "b", "c", "d", "e"]
    assert refresh_versions(tasks, 2, 0) == dict.fromkeys(tasks, 0)
    assert refresh_versions(tasks, 2, 1) == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}
    assert refresh_versions(tasks, 2, 3) == {"a": 3, "b": 1, "c": 2, "d": 2, "e": 3}
    # Cheapest first among rows of the same age.
    assert refresh_versions(tasks, 1, 1, cost={"e": 1.0, "a": 5.0, "b": 5.0, "c": 5.0, "d": 5.0}) == \
        {"a": 0, "b": 0, "c": 0, "d": 0, "e": 1}
    assert refresh_versions(tasks, 5, 2) == dict.fromkeys(tasks, 2)  # all: the full policy
    with pytest.raises(ForgettingError):
        refresh_versions(tasks, -1, 1)


def test_mismatched_columns_are_refused() -> None:
    with pytest.raises(ForgettingError, match="same"):
        score_targets(np.zeros((3, 10)), np.zeros((2, 11)))



def test_probe_check_flags_rows_that_no_longer_predict() -> None:
    """Fresh rank-3 rows predict held-back probes far better than example means; rows whose
    example factors drifted away do not, and the check says stale."""
    from forgetting.completion import make_completer
    from forgetting.staleness import probe_check

    old, new = planted(drift=3.0, seed=1)
    target, known_new, known_old = new[0], new[1:], old[1:]
    cols = np.arange(0, 400, 10)  # 40 probes
    fresh = probe_check(make_completer("mf").fit(known_new), make_completer("additive").fit(known_new),
                        cols, target[cols])
    stale = probe_check(make_completer("mf").fit(known_old), make_completer("additive").fit(known_old),
                        cols, target[cols])
    assert not fresh.stale and fresh.rmse_x100 < 0.5 * fresh.baseline_rmse_x100
    assert stale.stale and stale.rmse_x100 > 10 * fresh.rmse_x100
    with pytest.raises(ForgettingError, match="probes"):
        probe_check(None, None, np.arange(4), np.zeros(4))
