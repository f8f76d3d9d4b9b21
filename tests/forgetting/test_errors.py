"""Error paths that must name the problem: NaN/inf, wrong shapes, out-of-range fractions."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.completion import make_completer
from forgetting.errors import ForgettingError
from forgetting.lowrank import analyze_low_rank
from forgetting.metrics import classification, paired_tests, precision_at, rmse_x100, spearman_rows
from forgetting.probes import choose_probes, leverage_scores
from forgetting.replay import heldout_mask

IDS = [f"e{i}" for i in range(100)]


def test_lowrank_rejects_inf_and_bad_shapes() -> None:
    z = np.ones((3, 5), np.float32)
    z[1, 2] = np.inf
    with pytest.raises(ForgettingError, match="contains inf; use NaN"):
        analyze_low_rank(z)
    with pytest.raises(ForgettingError, match="2-D matrix with at least one row"):
        analyze_low_rank(np.ones(5))
    with pytest.raises(ForgettingError, match="2-D matrix with at least one row"):
        analyze_low_rank(np.ones((0, 5)))


def test_semantic_rejects_nan_or_misshaped_embeddings(small_z: np.ndarray) -> None:
    emb = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    bad = emb.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ForgettingError, match=r"must be finite \(N=300, d\)"):
        make_completer("semantic", example_embeddings=bad).fit(small_z)
    with pytest.raises(ForgettingError, match=r"must be finite \(N=300, d\), got \(299, 8\)"):
        make_completer("semantic", example_embeddings=emb[:-1]).fit(small_z)
    with pytest.raises(ForgettingError, match=r"must be finite \(N=300, d\), got \(300,\)"):
        make_completer("semantic", example_embeddings=emb[:, 0]).fit(small_z)
    c = make_completer("semantic", example_embeddings=emb).fit(small_z)
    with pytest.raises(ForgettingError, match=r"finite with d=8, got \(7,\)"):
        c.fold_in([0, 1], [0.1, 0.2], task_embedding=np.ones(7, np.float32))
    with pytest.raises(ForgettingError, match="finite with d=8"):
        c.fold_in([0, 1], [0.1, 0.2], task_embedding=np.full(8, np.nan, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_paired_tests_reject_non_finite(bad: float) -> None:
    a = np.array([0.1, 0.2, 0.3, 0.4])
    b = a.copy()
    b[2] = bad
    with pytest.raises(ForgettingError, match="two finite arrays"):
        paired_tests(a, b)
    with pytest.raises(ForgettingError, match="two finite arrays"):
        paired_tests(b, a)
    with pytest.raises(ForgettingError, match="equal length >= 2, got 1 and 1"):
        paired_tests(a[:1], a[:1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prediction_metrics_reject_non_finite_predictions(bad: float) -> None:
    true = np.array([[0.1, 0.2, 0.3, 0.4]])
    pred = true.copy()
    pred[0, 1] = bad
    score = np.ones_like(true, bool)
    for metric in (rmse_x100, spearman_rows):
        with pytest.raises(ForgettingError, match="predictions contain NaN or inf"):
            metric(true, pred, score)
    with pytest.raises(ForgettingError, match="predictions contain NaN or inf"):
        classification(true, pred, score)
    with pytest.raises(ForgettingError, match="predictions contain NaN or inf"):
        precision_at(true, pred, score, 0.5)
    score[0, 1] = False  # an unscored entry may hold anything (e.g. a probe nobody predicts)
    assert np.isfinite(rmse_x100(true, pred, score))


def test_metrics_reject_inf_truth_shape_mismatch_and_bad_fraction() -> None:
    true = np.array([[0.1, np.inf, 0.3]])
    score = np.ones_like(true, bool)
    with pytest.raises(ForgettingError, match="true values contain inf; use NaN"):
        rmse_x100(true, np.zeros_like(true), score)
    true[0, 1] = np.nan  # NaN = unmeasured: skipped, not an error
    assert rmse_x100(true, np.zeros_like(true), score) == pytest.approx(100 * np.sqrt(0.05))
    with pytest.raises(ForgettingError, match="shape mismatch"):
        rmse_x100(true, np.zeros((1, 2)), score)
    for frac in (0.0, 1.5, -0.1):
        with pytest.raises(ForgettingError, match="fraction must be in"):
            precision_at(np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 3), bool), frac)


@pytest.mark.parametrize("frac", [1.5, -0.25, -0.999, 2.5])
def test_heldout_mask_rejects_out_of_range_fraction(frac: float) -> None:
    with pytest.raises(ForgettingError, match=r"held-out fraction must be in \(0, 1\)"):
        heldout_mask(IDS, frac)


def test_heldout_mask_rejects_bad_counts_and_duplicates() -> None:
    with pytest.raises(ForgettingError, match="leaves no examples to replay out of 100"):
        heldout_mask(IDS, 100)
    with pytest.raises(ForgettingError, match="leaves no examples"):
        heldout_mask(IDS, -3)
    with pytest.raises(ForgettingError, match="not unique"):
        heldout_mask(["a", "a", "b"], 1)


def test_precomputed_leverage_is_validated(small_z: np.ndarray) -> None:
    lev = leverage_scores(small_z)
    with pytest.raises(ForgettingError, match="leverage must be 300 finite scores"):
        choose_probes(300, 5, seed=0, strategy="leverage", leverage=lev[:-1])
    bad = lev.copy()
    bad[0] = np.nan
    with pytest.raises(ForgettingError, match="leverage must be 300 finite scores"):
        choose_probes(300, 5, seed=0, strategy="leverage", leverage=bad)
    with pytest.raises(ForgettingError, match="leverage must be 300 finite scores"):
        choose_probes(300, 5, seed=0, strategy="leverage", leverage=-lev)


@pytest.mark.parametrize("method", ["additive", "knn", "knn_pearson", "mf", "als", "random"])
def test_fit_on_no_rows_or_no_columns_is_refused(method: str) -> None:
    with pytest.raises(ForgettingError, match="needs at least min_rows=1 known rows, got 0"):
        make_completer(method).fit(np.zeros((0, 5), np.float32))
    with pytest.raises(ForgettingError, match="Z has no columns"):
        make_completer(method).fit(np.zeros((3, 0), np.float32))
    with pytest.raises(ForgettingError, match="must be 2-D"):
        make_completer(method).fit(np.zeros(5, np.float32))
