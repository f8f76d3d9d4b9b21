"""NllCache: measure once per (model key, digest), serve subsets from disk."""

from __future__ import annotations

import numpy as np

from training.cache import NllCache
from training.data import Example
from training.nll import measure_nll

EX = [Example.text(f"the cat sat on the mat {i}") for i in range(6)]


def test_measures_missing_only_and_serves_from_disk(tmp_path, tok, model):
    cache = NllCache(tmp_path, "base/v1", "d1g3st", max_length=64)
    first = cache.measure(model, tok, EX[:4])
    np.testing.assert_allclose(first, measure_nll(model, tok, EX[:4], max_length=64))
    # Everything cached: no model needed at all (None would fail inside measure_nll).
    again = NllCache(tmp_path, "base/v1", "d1g3st", max_length=64).measure(None, tok, EX[3::-1])
    np.testing.assert_array_equal(again, first[::-1])
    both = cache.measure(model, tok, EX)  # two new examples measured, four served
    np.testing.assert_array_equal(both[:4], first)
    assert len(cache.load()) == 6
    other = NllCache(tmp_path, "base/v2", "d1g3st", max_length=64)
    assert other.path != cache.path and other.load() == {}
