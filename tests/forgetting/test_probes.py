"""Probe choice: distinct, seeded, never excluded; the leverage strategy prefers informative columns."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.probes import choose_probes


@pytest.mark.parametrize("strategy", ["random", "leverage"])
def test_distinct_never_excluded_and_deterministic(small_z: np.ndarray, strategy: str) -> None:
    exclude = np.zeros(300, bool)
    exclude[::3] = True
    a = choose_probes(300, 50, seed=4, exclude=exclude, strategy=strategy, known=small_z)
    b = choose_probes(300, 50, seed=4, exclude=exclude, strategy=strategy, known=small_z)
    np.testing.assert_array_equal(a, b)
    assert a.size == 50 and np.unique(a).size == 50 and not exclude[a].any()
    assert a.dtype == np.int64
    c = choose_probes(300, 50, seed=5, exclude=exclude, strategy=strategy, known=small_z)
    assert not np.array_equal(a, c)


def test_all_allowed_columns_can_be_probed_and_no_more() -> None:
    exclude = np.zeros(10, bool)
    exclude[:4] = True
    np.testing.assert_array_equal(choose_probes(10, 6, seed=0, exclude=exclude), np.arange(4, 10))
    with pytest.raises(ForgettingError, match="only 6 examples"):
        choose_probes(10, 7, seed=0, exclude=exclude)


def test_leverage_prefers_high_leverage_columns() -> None:
    rng = np.random.default_rng(0)
    z = np.zeros((20, 200), np.float32)
    z[:, :10] = rng.standard_normal((20, 10))  # only the first 10 columns vary across tasks
    hits = [
        np.isin(choose_probes(200, 10, seed=s, strategy="leverage", known=z), np.arange(10)).sum()
        for s in range(20)
    ]
    assert np.mean(hits) > 4  # uniform would give 0.5
    with pytest.raises(ForgettingError, match="known"):
        choose_probes(200, 10, seed=0, strategy="leverage")
    with pytest.raises(ForgettingError, match="unknown probe strategy"):
        choose_probes(200, 10, seed=0, strategy="greedy")


def test_precomputed_leverage_gives_the_same_probes(small_z: np.ndarray) -> None:
    from forgetting.probes import leverage_scores

    exclude = np.zeros(300, bool)
    exclude[:50] = True
    for seed in range(5):
        lev = leverage_scores(small_z, rank=5, seed=seed)
        a = choose_probes(300, 20, seed=seed, exclude=exclude, strategy="leverage", known=small_z)
        b = choose_probes(300, 20, seed=seed, exclude=exclude, strategy="leverage", leverage=lev)
        np.testing.assert_array_equal(a, b)
