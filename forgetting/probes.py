"""Which k upstream examples to measure for a new task.

Usage::

    cols = choose_probes(N, 30, seed=0, exclude=heldout)                       # random
    cols = choose_probes(N, 30, seed=0, exclude=heldout, strategy="leverage", known=Z_known)
    lev = leverage_scores(Z_known, rank=5, seed=0)             # once per known set, then reuse:
    cols = choose_probes(N, 30, seed=s, exclude=heldout, strategy="leverage", leverage=lev)

- "random": k distinct columns, uniformly, with `numpy.random.default_rng(seed)` (the reference
  code drew *with* replacement, so a task could waste probes on duplicates — not copied).
- "leverage": k distinct columns drawn without replacement with probability ∝ their statistical
  leverage in the known rows' top-`rank` example factors (‖V_j‖² of a truncated SVD of the
  column-centred known matrix, NaN filled with the column mean), mixed 1:1 with uniform so that
  no column has zero chance. Columns that drive the known tasks' differences are the ones whose
  measurement pins down a new task's factors (the idea behind CUR column sampling).
  The scores depend only on the known rows, so callers that draw many probe sets against the
  same known rows (the evaluation harness: seeds x test tasks) compute `leverage_scores` once
  and pass `leverage=`; an SVD per draw costs more than everything else in the draw.

Excluded columns (the held-out evaluation set) are never probed. Returns sorted int64 indices.
"""

from __future__ import annotations

import numpy as np

from forgetting.errors import ForgettingError
from forgetting.linalg import randomized_svd

STRATEGIES = ("random", "leverage")


def gumbel_topk(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct indices drawn sequentially without replacement with p ∝ exp(logits).

    Adding independent Gumbel noise and taking the k largest is exactly that distribution
    (Kool et al. 2019); -inf logits are never drawn. Returned in draw order.
    """
    keys = logits + rng.gumbel(size=logits.shape)
    if k >= keys.size:
        order = np.argsort(-keys, kind="stable")
    else:
        top = np.argpartition(-keys, k - 1)[:k]
        order = top[np.argsort(-keys[top], kind="stable")]
    return order[:k]


def leverage_scores(known: np.ndarray, rank: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) leverage of each column in the top-`rank` right singular vectors of centred `known`."""
    z = np.asarray(known, dtype=np.float32)
    colmean = np.nan_to_num(np.nanmean(np.where(np.isnan(z).all(0), 0.0, z), axis=0))
    centred = np.where(np.isnan(z), 0.0, z - colmean).astype(np.float32)
    _, s, vt = randomized_svd(centred, rank, seed=seed)
    vt = vt[s > 1e-8 * max(float(s[0]), 1e-30)] if s.size else vt
    return (vt**2).sum(axis=0)


def choose_probes(
    n: int,
    k: int,
    *,
    seed: int,
    exclude: np.ndarray | None = None,
    strategy: str = "random",
    known: np.ndarray | None = None,
    rank: int = 5,
    leverage: np.ndarray | None = None,
) -> np.ndarray:
    """Pick k distinct probe columns out of n, never from `exclude` (see module docstring).

    `leverage` (strategy "leverage"): precomputed `leverage_scores(known, rank, seed)` of shape
    (n,); when given, `known` is not read. Passing the scores `known` would produce gives the
    same probes as passing `known`.
    """
    if strategy not in STRATEGIES:
        raise ForgettingError(f"unknown probe strategy {strategy!r}; use one of {STRATEGIES}.")
    if k < 0 or n < 0:
        raise ForgettingError(f"need n >= 0 and k >= 0, got n={n}, k={k}.")
    allowed = np.ones(n, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != (n,):
            raise ForgettingError(f"exclude mask has shape {ex.shape}, expected ({n},).")
        allowed &= ~ex
    cand = np.flatnonzero(allowed)
    if k > cand.size:
        raise ForgettingError(
            f"asked for {k} probes but only {cand.size} examples may be probed "
            f"({n - cand.size} excluded); lower k or shrink the held-out set."
        )
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return np.sort(rng.choice(cand, size=k, replace=False)).astype(np.int64)
    if leverage is not None:
        scores = np.asarray(leverage, dtype=np.float64).reshape(-1)
        if scores.shape != (n,) or not np.isfinite(scores).all() or (scores < 0).any():
            raise ForgettingError(
                f"leverage must be {n} finite scores >= 0 (leverage_scores(known)), got "
                f"shape {scores.shape}."
            )
    elif known is None:
        raise ForgettingError(
            "strategy 'leverage' needs known=Z_known (the fitted rows) or leverage=scores."
        )
    else:
        known = np.asarray(known)
        if known.ndim != 2 or known.shape[1] != n:
            raise ForgettingError(f"known must be (M, {n}), got {known.shape}.")
        scores = leverage_scores(known, rank=rank, seed=seed)
    lev = scores[cand]
    total = lev.sum()
    p = 0.5 * lev / total + 0.5 / cand.size if total > 0 else np.full(cand.size, 1.0 / cand.size)
    with np.errstate(divide="ignore"):
        pick = gumbel_topk(np.log(p), k, rng)
    return np.sort(cand[pick]).astype(np.int64)
