"""Hypothesis properties: the replay sampler's guarantees and fold-in shift-equivariance."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from forgetting.completion import Completer, make_completer
from forgetting.replay import STRATEGIES, sample_replay
from forgetting.synthetic import planted_matrix


@st.composite
def _replay_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, str, float, int]:
    n = draw(st.integers(1, 60))
    scores = np.array(
        draw(st.lists(st.floats(-50, 50, allow_nan=False), min_size=n, max_size=n)), np.float64
    )
    exclude = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    budget = draw(st.integers(0, int((~exclude).sum())))
    strategy = draw(st.sampled_from(STRATEGIES))
    temperature = draw(st.floats(0.01, 10.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return scores, exclude, budget, strategy, temperature, seed


@settings(max_examples=200, deadline=None)
@given(_replay_case())
def test_sample_replay_distinct_budget_never_excluded_deterministic(
    case: tuple[np.ndarray, np.ndarray, int, str, float, int],
) -> None:
    scores, exclude, budget, strategy, temperature, seed = case
    kw = {"temperature": temperature, "strategy": strategy, "exclude": exclude, "seed": seed}
    plan = sample_replay(scores, budget, **kw)
    assert plan.indices.shape == (budget,) and plan.weights.shape == (budget,)
    assert np.unique(plan.indices).size == budget  # distinct
    assert not exclude[plan.indices].any()  # never a held-out example
    assert (plan.weights >= 0).all() and plan.weights.sum() <= 1 + 1e-9  # probabilities
    again = sample_replay(scores, budget, **kw)
    np.testing.assert_array_equal(plan.indices, again.indices)  # deterministic under the seed
    np.testing.assert_array_equal(plan.weights, again.weights)


@functools.cache
def _fitted(method: str) -> Completer:
    z = planted_matrix(12, 400, rank=2, noise=0.01, seed=3).z
    return make_completer(method).fit(z)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["additive", "knn_pearson", "mf", "als"]),
    st.lists(st.integers(0, 399), min_size=1, max_size=40, unique=True),
    st.floats(-2.0, 2.0, allow_nan=False),
    st.integers(0, 2**16),
)
def test_fold_in_is_shift_equivariant(
    method: str, cols: list[int], shift: float, seed: int
) -> None:
    # Raising every probe by c raises the whole predicted row by c: the task level is an
    # unpenalised parameter (additive, MF, ALS's explicit fold-in), and Pearson similarities
    # are centred, so the neighbours do not change either.
    c = _fitted(method)
    idx = np.array(cols)
    vals = np.random.default_rng(seed).normal(0.2, 0.1, idx.size)
    base = c.fold_in(idx, vals).astype(np.float64)
    moved = c.fold_in(idx, vals + shift).astype(np.float64)
    np.testing.assert_allclose(moved - base, shift, atol=2e-5 * (1 + abs(shift)))
