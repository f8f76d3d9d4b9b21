"""Small dense linear-algebra kernels shared by the low-rank analysis and the completers.

Usage::

    U, s, Vt = randomized_svd(A, rank=5, seed=0)           # top-5 SVD of a (M, N) matrix
    w = ridge_fold_in(Q[cols], y, lam=1.0)                   # bias + factors of one new row
    X = masked_ridge_rows(Y, W, F, lam)                      # per-row ridge with NaN masks, batched

Everything is vectorised over the long axis (examples): per-row systems are (r+1)x(r+1), built
for all rows at once as `mask @ (outer products)` and solved with one batched `np.linalg.solve`.
"""

from __future__ import annotations

import numpy as np


def randomized_svd(
    a: np.ndarray, rank: int, *, seed: int = 0, oversample: int = 10, n_iter: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-`rank` SVD of a dense finite matrix (Halko et al. range finder, power iterations).

    Exact up to float error when `rank + oversample >= min(a.shape)` (falls back to a full SVD,
    which is cheaper there anyway). Returns `U (M, r), s (r,), Vt (r, N)` in float64.
    """
    m, n = a.shape
    rank = max(0, min(rank, m, n))
    if rank + oversample >= min(m, n):
        u, s, vt = np.linalg.svd(np.asarray(a, dtype=np.float64), full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    rng = np.random.default_rng(seed)
    k = rank + oversample
    omega = rng.standard_normal((n, k)).astype(a.dtype, copy=False)
    y = a @ omega
    for _ in range(n_iter):  # power iterations sharpen a slowly decaying spectrum
        y, _ = np.linalg.qr(y)
        y = a @ (a.T @ y)
    q, _ = np.linalg.qr(y.astype(np.float64))
    b = q.T @ a  # (k, N)
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    return (q @ ub)[:, :rank], s[:rank], vt[:rank]


def ridge_fold_in(
    basis: np.ndarray, y: np.ndarray, lam: float, *, penalise_bias: float = 0.0
) -> np.ndarray:
    """Solve min_w ||[1, basis] w - y||² + lam ||w[1:]||² (+ penalise_bias w0²).

    `basis` is (k, r) — the item factors of the k probed columns — and `y` the probe values
    minus the fixed offsets. Returns (r+1,): the task bias, then the task factors. The bias is
    unpenalised by default: a new task's overall forgetting level is the best-determined thing
    the probes tell us.
    """
    k, r = basis.shape
    if k == 0:  # no probes: nothing is known about the task beyond the fixed offsets
        return np.zeros(r + 1)
    x = np.empty((k, r + 1), dtype=np.float64)
    x[:, 0] = 1.0
    x[:, 1:] = basis
    a = x.T @ x
    a[np.diag_indices(r + 1)] += np.r_[penalise_bias, np.full(r, lam)]
    if penalise_bias == 0.0 and lam == 0.0 and k <= r:
        return np.linalg.lstsq(x, y, rcond=None)[0]  # under-determined: minimum-norm answer
    return np.linalg.solve(a, x.T @ y)


def masked_ridge_rows(
    y: np.ndarray, mask: np.ndarray | None, f: np.ndarray, pen: np.ndarray
) -> np.ndarray:
    """For every row i solve min_x sum_{j observed} (y_ij - f_j·x)² + sum_l pen_l x_l².

    y: (M, N) with observed entries finite (unobserved ignored; may hold anything finite).
    mask: (M, N) bool observed, or None when fully observed (then one shared Gram matrix).
    f: (N, d) fixed factors. pen: (d,) per-coordinate ridge penalties (> 0 keeps it solvable).
    Returns (M, d). Cost O(M N d²) via one matmul; no Python loop over rows or columns.
    """
    d = f.shape[1]
    if mask is None:
        g = f.T @ f + np.diag(pen)
        return np.linalg.solve(g, (y @ f).T).T
    outer = (f[:, :, None] * f[:, None, :]).reshape(f.shape[0], d * d)
    grams = (mask.astype(f.dtype) @ outer).reshape(-1, d, d)
    grams[:, np.arange(d), np.arange(d)] += pen
    rhs = np.where(mask, y, 0.0).astype(f.dtype) @ f
    return np.linalg.solve(grams, rhs[:, :, None])[:, :, 0]
