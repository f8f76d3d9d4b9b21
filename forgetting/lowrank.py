"""How low-rank is a forgetting matrix? R² of truncated SVD and of simple structured fits.

Usage::

    from forgetting.lowrank import analyze_low_rank
    rep = analyze_low_rank(Z, ranks=range(1, 11), max_columns=10_000, seed=0)
    print(rep.svd_r2[5], rep.additive_r2); rep.to_json()

R² = 1 - mean((Z - Ẑ)²) / mean((Z - mean Z)²), the total variance centred on the *global* mean
as in the reference study (`fit_utils.py`), so a rank-1 fit may score well simply because rows
differ in scale — which is the point: that is the "multiplicative" structure.

Fits:
- svd rank r: truncated SVD of the (uncentred) matrix, r = 1..10;
- additive: μ + b_task + b_example, the exact least-squares fit of a complete matrix (row mean +
  column mean - grand mean; the reference fitted the same model with surprise's regularised ALS);
- multiplicative: rank-1 SVD (σ₁u₁v₁ᵀ) — the same number as svd rank 1, reported by name;
- task-only: each row's mean; example-only: each column's mean.

NaN rule: columns with any unobserved entry are dropped before fitting (the reference study's
`remove_nan_cols`); the report says how many were used. Large N is subsampled to `max_columns`
columns chosen with `numpy.random.default_rng(seed).choice(..., replace=False)` — a fixed seed,
so two runs analyse the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from forgetting.errors import ForgettingError
from forgetting.linalg import randomized_svd

EXACT_SVD_MAX = 4000  # the smaller side up to which the SVD is exact (milliseconds at 50 x 3,000)


@dataclass
class LowRankReport:
    """R² of each fit on the analysed submatrix; serialises with `to_dict` / `to_json`."""

    n_rows: int
    n_columns: int
    n_columns_used: int
    n_columns_dropped_nan: int
    seed: int
    svd_r2: dict[int, float]
    additive_r2: float
    multiplicative_r2: float
    task_only_r2: float
    example_only_r2: float
    singular_values: list[float] = field(default_factory=list)
    nan_policy: str = "drop columns with any NaN"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["svd_r2"] = {str(k): v for k, v in self.svd_r2.items()}
        return d

    def to_json(self, **kw: object) -> str:
        return json.dumps(self.to_dict(), **kw)  # type: ignore[arg-type]


def r2_score(z: np.ndarray, zhat: np.ndarray) -> float:
    """Global-mean-centred R² (1 - SSE/SST); 1.0 for a constant matrix fitted exactly."""
    z = np.asarray(z, dtype=np.float64)
    sst = float(np.mean((z - z.mean()) ** 2))
    sse = float(np.mean((z - zhat) ** 2))
    if sst == 0.0:
        return 1.0 if sse == 0.0 else float("-inf")
    return 1.0 - sse / sst


def analyze_low_rank(
    z: np.ndarray,
    ranks: Iterable[int] = range(1, 11),
    *,
    max_columns: int | None = 10_000,
    seed: int = 0,
) -> LowRankReport:
    """Fit truncated SVDs and the structured baselines; see the module docstring for the rules."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[0] < 1:
        raise ForgettingError(f"need a 2-D matrix with at least one row, got shape {z.shape}.")
    if np.isinf(z).any():
        raise ForgettingError("matrix contains inf; use NaN for unobserved entries.")
    m, n = z.shape
    complete = ~np.isnan(z).any(axis=0)
    cols = np.flatnonzero(complete)
    if cols.size == 0:
        raise ForgettingError(
            "every column has an unobserved (NaN) entry, so nothing can be analysed; "
            "analyse only fully measured rows (ForgettingMatrix.select_rows)."
        )
    if max_columns is not None and cols.size > max_columns:
        cols = np.sort(np.random.default_rng(seed).choice(cols, max_columns, replace=False))
    sub = z[:, cols].astype(np.float64)
    ranks = sorted({int(r) for r in ranks if int(r) >= 1})
    top = min(max(ranks, default=1), *sub.shape)
    if min(sub.shape) <= EXACT_SVD_MAX:  # exact when cheap: R² to the last digit
        u, s, vt = np.linalg.svd(sub, full_matrices=False)
        u, s, vt = u[:, :top], s[:top], vt[:top]
    else:
        u, s, vt = randomized_svd(sub, top, seed=seed)
    svd_r2: dict[int, float] = {}
    approx = np.zeros_like(sub)
    done = 0
    for r in ranks:
        r_eff = min(r, top)
        for c in range(done, r_eff):  # accumulate components instead of rebuilding each rank
            approx += s[c] * np.outer(u[:, c], vt[c])
        done = max(done, r_eff)
        svd_r2[r] = r2_score(sub, approx)
    row = sub.mean(axis=1, keepdims=True)
    col = sub.mean(axis=0, keepdims=True)
    grand = sub.mean()
    rank1 = s[0] * np.outer(u[:, 0], vt[0]) if top >= 1 else np.zeros_like(sub)
    return LowRankReport(
        n_rows=m,
        n_columns=n,
        n_columns_used=int(cols.size),
        n_columns_dropped_nan=int(n - complete.sum()),
        seed=seed,
        svd_r2=svd_r2,
        additive_r2=r2_score(sub, row + col - grand),
        multiplicative_r2=r2_score(sub, rank1),
        task_only_r2=r2_score(sub, np.broadcast_to(row, sub.shape)),
        example_only_r2=r2_score(sub, np.broadcast_to(col, sub.shape)),
        singular_values=[float(x) for x in s],
    )
