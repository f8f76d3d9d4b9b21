"""Low-rank analysis: exact-rank matrices are recovered; structured fits on known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.lowrank import analyze_low_rank, r2_score


def test_exact_rank_r_gives_r2_one_at_rank_r() -> None:
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((30, 3)) @ rng.standard_normal((3, 500))).astype(np.float32)
    rep = analyze_low_rank(z, ranks=range(1, 6))
    assert rep.svd_r2[2] < 0.99
    assert rep.svd_r2[3] == pytest.approx(1.0, abs=1e-5)
    assert rep.svd_r2[5] == pytest.approx(1.0, abs=1e-5)
    assert rep.multiplicative_r2 == pytest.approx(rep.svd_r2[1])


def test_additive_matrix_is_fitted_exactly_by_additive() -> None:
    rng = np.random.default_rng(1)
    z = (1.0 + rng.standard_normal(20)[:, None] + rng.standard_normal(300)[None, :]).astype(
        np.float32
    )
    rep = analyze_low_rank(z, ranks=(1, 2))
    assert rep.additive_r2 == pytest.approx(1.0, abs=1e-5)
    assert rep.svd_r2[2] == pytest.approx(1.0, abs=1e-5)  # additive = rank <= 2
    assert rep.task_only_r2 + rep.example_only_r2 == pytest.approx(1.0, abs=1e-4)


def test_nan_columns_dropped_subsampling_fixed_and_json() -> None:
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 400)).astype(np.float32)
    z[0, :10] = np.nan
    a = analyze_low_rank(z, max_columns=100, seed=3)
    b = analyze_low_rank(z, max_columns=100, seed=3)
    assert a.n_columns_dropped_nan == 10 and a.n_columns_used == 100
    assert a.to_dict() == b.to_dict()
    assert json.loads(a.to_json())["svd_r2"]["1"] == a.svd_r2[1]
    with pytest.raises(ForgettingError, match="every column"):
        analyze_low_rank(np.full((2, 3), np.nan))


def test_r2_of_constant_matrix() -> None:
    z = np.ones((3, 4))
    assert r2_score(z, z) == 1.0
