"""Scores for predicted forgetting rows and a paired test for comparing replay strategies.

Usage::

    score = mask_unobserved(true, probe_cols_per_row)      # (B, N) bool: what the predictor did not see
    rmse_x100(true, pred, score)
    classification(true, pred, score, label="median")      # f1 / precision / recall / roc_auc
    precision_at(true, pred, score, frac=0.01); spearman_rows(true, pred, score)
    paired_tests(held_out_loss_pred, held_out_loss_random)  # across tasks

All prediction metrics use only the entries in `score` (unobserved by the probes, and measured);
the old reference code scored the probes too, which leaks. Labels ("forgotten"):
- "positive": Z > 0 (the study's; degenerate when nearly every entry is positive — 98.8 % in the
  prototype world) with the prediction thresholded at 0;
- "median": Z > the row's median (over scored entries), prediction thresholded at its own row
  median. Binary metrics are pooled over all scored entries of all rows; ROC-AUC uses the
  prediction (minus its row median for "median") as the score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from forgetting.errors import ForgettingError


def _check(true: np.ndarray, pred: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    t = np.atleast_2d(np.asarray(true, dtype=np.float64))
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    s = np.atleast_2d(np.asarray(score, dtype=bool))
    if not t.shape == p.shape == s.shape:
        raise ForgettingError(f"shape mismatch: true {t.shape}, pred {p.shape}, mask {s.shape}.")
    if np.isinf(t).any():  # NaN = unmeasured is legitimate; inf is a broken measurement
        raise ForgettingError("true values contain inf; use NaN for unmeasured entries.")
    s = s & np.isfinite(t)
    if not np.isfinite(p[s]).all():
        raise ForgettingError("predictions contain NaN or inf on scored entries; check the method.")
    return t, p, s


def mask_unobserved(true: np.ndarray, probes: list[np.ndarray]) -> np.ndarray:
    """(B, N) bool: measured entries (finite `true`) that were not probed."""
    t = np.atleast_2d(np.asarray(true))
    m = np.isfinite(t)
    for i, cols in enumerate(probes):  # one row per task
        m[i, np.asarray(cols, dtype=np.int64)] = False
    return m


def rmse_x100(true: np.ndarray, pred: np.ndarray, score: np.ndarray) -> float:
    """Root mean squared error ×100 over the scored entries (pooled)."""
    t, p, s = _check(true, pred, score)
    return float(100.0 * np.sqrt(np.mean((t[s] - p[s]) ** 2)))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks); NaN if one class only."""
    labels = np.asarray(labels, dtype=bool)
    npos = int(labels.sum())
    nneg = labels.size - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


@dataclass
class BinaryScores:
    f1: float
    precision: float
    recall: float
    roc_auc: float
    positive_rate: float  # share of scored entries labelled "forgotten"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _row_median(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.nanmedian(np.where(s, x, np.nan), axis=1, keepdims=True)


def classification(
    true: np.ndarray, pred: np.ndarray, score: np.ndarray, *, label: str = "median"
) -> BinaryScores:
    """Pooled F1 / precision / recall / ROC-AUC of "forgotten" (see module docstring)."""
    t, p, s = _check(true, pred, score)
    if label == "positive":
        y, yhat, auc_score = t > 0, p > 0, p
    elif label == "median":
        pm = _row_median(p, s)
        y, yhat, auc_score = t > _row_median(t, s), p > pm, p - pm
    else:
        raise ForgettingError(f"unknown label {label!r}; use 'positive' (Z > 0) or 'median'.")
    y, yhat, auc_score = y[s], yhat[s], auc_score[s]
    tp = float(np.sum(y & yhat))
    prec = tp / max(float(yhat.sum()), 1.0)
    rec = tp / max(float(y.sum()), 1.0)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return BinaryScores(f1, prec, rec, roc_auc(y, auc_score), float(y.mean()) if y.size else 0.0)


def precision_at(true: np.ndarray, pred: np.ndarray, score: np.ndarray, frac: float) -> float:
    """Mean over rows of |predicted top-frac ∩ true top-frac| / k among scored entries."""
    t, p, s = _check(true, pred, score)
    if not 0 < frac <= 1:
        raise ForgettingError(f"precision@ fraction must be in (0, 1], got {frac}.")
    out = []
    for i in range(t.shape[0]):  # per task; each step is vectorised over examples
        idx = np.flatnonzero(s[i])
        if idx.size == 0:
            continue
        k = max(1, int(frac * idx.size))
        top_p = idx[np.argpartition(-p[i, idx], k - 1)[:k]]
        top_t = idx[np.argpartition(-t[i, idx], k - 1)[:k]]
        out.append(np.intersect1d(top_p, top_t).size / k)
    return float(np.mean(out)) if out else float("nan")


def spearman_rows(true: np.ndarray, pred: np.ndarray, score: np.ndarray) -> float:
    """Mean over rows of Spearman's ρ between prediction and truth on scored entries."""
    t, p, s = _check(true, pred, score)
    rhos = []
    for i in range(t.shape[0]):
        a, b = t[i, s[i]], p[i, s[i]]
        if a.size > 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
            rhos.append(stats.spearmanr(a, b).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired comparison of two strategies over the same tasks/seeds (a - b; lower = a better).

    Returns the mean difference, how often a < b, the paired t-test and the Wilcoxon
    signed-rank test (two-sided; p = 1 when every difference is zero).
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ForgettingError(
            f"paired tests need two finite arrays of equal length >= 2, got {x.size} and {y.size}."
        )
    d = x - y
    if np.all(d == 0):
        t_stat, t_p, w_stat, w_p = 0.0, 1.0, 0.0, 1.0
    else:
        t_res = stats.ttest_rel(x, y)
        w_res = stats.wilcoxon(x, y)
        t_stat, t_p = float(t_res.statistic), float(t_res.pvalue)
        w_stat, w_p = float(w_res.statistic), float(w_res.pvalue)
    return {
        "n": int(d.size),
        "mean_diff": float(d.mean()),
        "a_wins": int(np.sum(d < 0)),
        "t_stat": t_stat,
        "t_p": t_p,
        "wilcoxon_stat": w_stat,
        "wilcoxon_p": w_p,
    }
