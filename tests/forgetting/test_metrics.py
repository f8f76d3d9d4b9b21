"""Metrics on hand-checkable cases and the paired tests."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.metrics import (
    classification,
    mask_unobserved,
    paired_tests,
    precision_at,
    rmse_x100,
    roc_auc,
    spearman_rows,
)


def test_rmse_ignores_probed_and_unmeasured_entries() -> None:
    true = np.array([[1.0, 2.0, np.nan, 4.0]])
    pred = np.array([[1.0, 0.0, 5.0, 3.0]])
    score = mask_unobserved(true, [np.array([1])])
    np.testing.assert_array_equal(score, [[True, False, False, True]])
    assert rmse_x100(true, pred, score) == pytest.approx(100 * np.sqrt(0.5))


def test_classification_labels() -> None:
    true = np.array([[0.1, 0.2, 0.3, 0.4], [-1.0, 1.0, 2.0, 3.0]])
    score = np.ones_like(true, bool)
    perfect = classification(true, true * 2, score, label="median")
    assert perfect.f1 == 1.0 and perfect.roc_auc == 1.0 and perfect.positive_rate == 0.5
    pos = classification(true, -true, score, label="positive")
    assert pos.recall == 0.0 and pos.roc_auc == 0.0
    with pytest.raises(ForgettingError, match="unknown label"):
        classification(true, true, score, label="top")


def test_auc_precision_at_and_spearman() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))
    true = np.arange(100, dtype=float)[None, :]
    score = np.ones_like(true, bool)
    assert precision_at(true, true, score, 0.1) == 1.0
    assert precision_at(true, -true, score, 0.1) == 0.0
    assert spearman_rows(true, true**3, score) == pytest.approx(1.0)


def test_paired_tests() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(1.0, 0.1, 12)
    a = b - 0.05 + rng.normal(0, 0.01, 12)
    res = paired_tests(a, b)
    assert res["a_wins"] == 12 and res["t_p"] < 1e-3 and res["wilcoxon_p"] < 1e-3
    assert paired_tests(b, b)["t_p"] == 1.0
    with pytest.raises(ForgettingError, match="equal length"):
        paired_tests(a, b[:3])
