"""Held-out set and replay sampler: exclusions, budget, no duplicates, softmax law, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgetting.errors import ForgettingError
from forgetting.replay import (
    default_heldout_size,
    heldout_mask,
    id_hash,
    replay_budget,
    sample_replay,
)

IDS = [f"dolma-{i:05d}" for i in range(1000)]


def test_heldout_count_fraction_and_order_independence() -> None:
    m = heldout_mask(IDS, 100, seed=0)
    assert m.sum() == 100
    assert heldout_mask(IDS, 0.25).sum() == 250
    perm = np.random.default_rng(0).permutation(len(IDS))
    shuffled = heldout_mask([IDS[i] for i in perm], 100, seed=0)
    assert {IDS[i] for i in perm[shuffled]} == {IDS[i] for i in np.flatnonzero(m)}
    assert not np.array_equal(m, heldout_mask(IDS, 100, seed=1))
    with pytest.raises(ForgettingError, match="smaller"):
        heldout_mask(IDS, 1000)


def _reference_hash(text: str, seed: int) -> int:
    """The documented algorithm in plain Python ints: seeded FNV-1a-64, then splitmix64."""
    mask = 2**64 - 1

    def splitmix(x: int) -> int:
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    h = 0xCBF29CE484222325 ^ splitmix(seed)
    data = text.encode("utf-8")
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & mask
    return splitmix(h ^ len(data))


def test_hash_matches_reference_and_pinned_values() -> None:
    # Pinned: held-out sets must not change across numpy versions, machines or processes.
    ids = ["a", "ab", "é", "dolma-00042"]
    for seed in (0, 1, 12345):
        assert id_hash(ids, seed).tolist() == [_reference_hash(i, seed) for i in ids]
    assert id_hash(["a", "ab", "é"], seed=0).tolist() == [
        18333067107861811135,
        10854740829022475207,
        1581977772800055588,
    ]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=3, max_size=40, unique=True),
    st.integers(0, 2**31),
    st.data(),
)
def test_heldout_stable_under_permutation_and_subset(ids: list[str], seed: int, data) -> None:
    count = data.draw(st.integers(1, len(ids) - 1))
    full = {i for i, h in zip(ids, heldout_mask(ids, count, seed), strict=True) if h}
    perm = data.draw(st.permutations(ids))
    assert {i for i, h in zip(perm, heldout_mask(perm, count, seed), strict=True) if h} == full
    sub = data.draw(st.lists(st.sampled_from(ids), min_size=count + 1, unique=True))
    sub_held = {i for i, h in zip(sub, heldout_mask(sub, count, seed), strict=True) if h}
    assert full & set(sub) <= sub_held


def test_default_heldout_size() -> None:
    assert default_heldout_size(141_871) == 10_000
    assert heldout_mask(IDS, default_heldout_size(len(IDS))).sum() == 250


def test_replay_budget() -> None:
    assert replay_budget(300, 1 / 32) == 10
    assert replay_budget(0, 1 / 32) == 1
    with pytest.raises(ForgettingError):
        replay_budget(10, -1.0)


@pytest.mark.parametrize("strategy", ["softmax", "topk", "uniform"])
def test_sampler_budget_exclusion_distinct_deterministic(strategy: str) -> None:
    scores = np.random.default_rng(0).standard_normal(500)
    held = heldout_mask([str(i) for i in range(500)], 100)
    plan = sample_replay(scores, 40, strategy=strategy, exclude=held, seed=3)
    assert plan.indices.size == 40 and np.unique(plan.indices).size == 40
    assert not held[plan.indices].any()
    again = sample_replay(scores, 40, strategy=strategy, exclude=held, seed=3)
    np.testing.assert_array_equal(plan.indices, again.indices)
    assert plan.weights.shape == (40,) and (plan.weights > 0).all()
    pairs = plan.ids([f"id{i}" for i in range(500)])
    assert pairs[0] == (f"id{plan.indices[0]}", float(plan.weights[0]))


def test_topk_takes_the_highest_and_oracle_is_the_true_row() -> None:
    true_row = np.arange(10, dtype=float)
    plan = sample_replay(true_row, 3, strategy="topk", exclude=true_row == 9)
    np.testing.assert_array_equal(plan.indices, [8, 7, 6])


def test_softmax_frequencies_follow_the_law() -> None:
    scores = np.array([0.0, 0.1, 0.2, 0.3])
    t = 0.1
    p = np.exp(scores / t) / np.exp(scores / t).sum()
    n = 20000
    first = np.array([sample_replay(scores, 1, temperature=t, seed=s).indices[0] for s in range(n)])
    freq = np.bincount(first, minlength=4) / n
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(p * (1 - p) / n).max())
    # Inclusion probability of each item in a 2-draw sample without replacement (exact formula).
    incl = np.zeros(4)
    for i, j in itertools.permutations(range(4), 2):
        pr = p[i] * p[j] / (1 - p[i])
        incl[i] += pr
        incl[j] += pr
    pairs = [sample_replay(scores, 2, temperature=t, seed=s).indices for s in range(n)]
    emp = np.bincount(np.concatenate(pairs), minlength=4) / n
    np.testing.assert_allclose(emp, incl, atol=0.02)


def test_sampler_rejects_bad_input() -> None:
    s = np.array([0.1, np.nan, 0.3])
    with pytest.raises(ForgettingError, match="NaN"):
        sample_replay(s, 1)
    plan = sample_replay(s, 2, exclude=np.isnan(s))  # NaN excluded is fine
    assert set(plan.indices) == {0, 2}
    with pytest.raises(ForgettingError, match="exceeds"):
        sample_replay(np.zeros(3), 4)
    with pytest.raises(ForgettingError, match="temperature"):
        sample_replay(np.zeros(3), 1, temperature=0)
    with pytest.raises(ForgettingError, match="unknown replay strategy"):
        sample_replay(np.zeros(3), 1, strategy="mir")


def test_warmup_budget_is_a_proportional_part_of_the_budget() -> None:
    from forgetting.replay import warmup_budget

    assert warmup_budget(10, 0.1) == 1 and warmup_budget(40, 0.1) == 4 and warmup_budget(41, 0.25) == 10
    assert warmup_budget(1, 0.1) == 1 and warmup_budget(0, 0.1) == 0  # at least one slot's example
    assert all(warmup_budget(b, f) <= b for b in range(0, 50) for f in (0.0, 0.1, 0.5, 1.0))
    with pytest.raises(ForgettingError):
        warmup_budget(10, 1.5)
