"""The interface every completion method implements, plus the additive baseline they build on.

Usage::

    c = SomeCompleter(SomeConfig(...)).fit(Z_known)    # (M, N), NaN = unobserved; returns self
    row = c.fold_in(cols, values)                        # (N,) float32 prediction for a new task
    rows = c.predict_rows(Z_partial)                     # (B, N) batch: NaN = not probed

A new task is "folded in": the known rows stay fixed and only the new task's few parameters are
estimated from its k probes. `fit` validates once (shape, inf, `min_rows`); `fold_in` validates
the probes (in range, unique, finite) and calls `_fold_in`, which subclasses implement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from forgetting.errors import ForgettingError


@dataclass
class BiasModel:
    """μ + b_task + b_example fitted by regularised alternating means (NaN-aware, vectorised).

    Columns nobody observed get b_example = 0 (they are predicted at the task's level).
    """

    mu: float
    task_bias: np.ndarray  # (M,)
    item_bias: np.ndarray  # (N,) float32

    @classmethod
    def fit(cls, z: np.ndarray, reg_item: float, reg_task: float, iters: int = 10) -> BiasModel:
        obs = ~np.isnan(z)
        full = bool(obs.all())
        zf = z if full else np.where(obs, z, np.float32(0.0))
        col_sum = zf.sum(axis=0, dtype=np.float64)
        row_sum = zf.sum(axis=1, dtype=np.float64)
        cnt_item = obs.sum(axis=0)
        cnt_task = obs.sum(axis=1)
        mu = float(row_sum.sum() / max(int(cnt_task.sum()), 1))
        obs32 = None if full else obs.astype(np.float32)
        bt = np.zeros(z.shape[0], np.float64)
        bi = np.zeros(z.shape[1], np.float64)
        den_item = np.maximum(cnt_item + reg_item, 1e-12)  # all-NaN column: 0 / tiny = 0
        den_task = np.maximum(cnt_task + reg_task, 1e-12)
        # Each sweep is two masked matrix-vector products (scalars when fully observed); the
        # sums of Z are computed once. 10 sweeps converge to float32 precision on these sizes.
        for _ in range(iters):
            bt_sum = bt.sum() if obs32 is None else obs32.T @ bt
            bi = (col_sum - mu * cnt_item - bt_sum) / den_item
            bi_sum = bi.sum() if obs32 is None else obs32 @ bi
            bt = (row_sum - mu * cnt_task - bi_sum) / den_task
        return cls(mu, bt.astype(np.float32), bi.astype(np.float32))

    def fold_task_bias(self, cols: np.ndarray, values: np.ndarray, reg: float) -> float:
        if cols.size == 0:
            return 0.0
        return float((values - self.mu - self.item_bias[cols]).sum() / (cols.size + reg))

    def baseline(self) -> np.ndarray:
        """(M, N) float32 μ + b_task + b_example of the known rows."""
        return (self.mu + self.task_bias[:, None] + self.item_bias[None, :]).astype(np.float32)


def as_matrix(z: Any, what: str = "Z") -> np.ndarray:
    """Validate a known-rows matrix: 2-D, float32, no inf (NaN = unobserved is allowed)."""
    arr = np.asarray(z, dtype=np.float32)
    if arr.ndim != 2:
        raise ForgettingError(f"{what} must be 2-D (tasks x examples), got shape {arr.shape}.")
    if np.isinf(arr).any():
        raise ForgettingError(f"{what} contains inf; replace it with NaN (unobserved) or a value.")
    return arr


class Completer(ABC):
    """Fit on known rows once; fold in new tasks from their probes."""

    name: ClassVar[str] = ""
    min_rows: int = 1

    def __init__(self) -> None:
        self.n_items: int | None = None

    def fit(self, z: Any, **kwargs: Any) -> Self:
        """Fit on the known rows (M, N); NaN = unobserved. Returns self."""
        arr = as_matrix(z)
        if arr.shape[0] < self.min_rows:
            raise ForgettingError(
                f"method {self.name!r} needs at least min_rows={self.min_rows} known rows, got "
                f"{arr.shape[0]}; measure more tasks or use 'additive' (min_rows=1)."
            )
        if arr.shape[1] == 0:
            raise ForgettingError("Z has no columns; measure at least one upstream example.")
        self.n_items = arr.shape[1]
        self._fit(arr, **kwargs)
        return self

    def _check_probes(self, cols: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.n_items is None:
            raise ForgettingError(f"{self.name!r} is not fitted; call fit(Z_known) first.")
        c = np.asarray(cols).reshape(-1)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise ForgettingError("probe columns must be integer indices; use m.column_index(ids).")
        c = c.astype(np.int64)
        if c.shape != v.shape:
            raise ForgettingError(
                f"{c.size} probe columns but {v.size} values; pass one value per probed column."
            )
        if not np.isfinite(v).all():
            raise ForgettingError(
                "probe values contain NaN or inf; drop unmeasured probes (pass only measured ones)."
            )
        if c.size and (c.min() < 0 or c.max() >= self.n_items):
            raise ForgettingError(
                f"probe columns must lie in [0, {self.n_items}); got {c.min()}..{c.max()}."
            )
        if np.unique(c).size != c.size:
            raise ForgettingError("probe columns repeat; probe each example once (no duplicates).")
        return c, v

    def fold_in(
        self, cols: Any, values: Any, task_embedding: np.ndarray | None = None
    ) -> np.ndarray:
        """Predict the full (N,) row of a new task from its probed columns and values."""
        c, v = self._check_probes(cols, values)
        out = self._fold_in(c, v, task_embedding)
        return np.asarray(out, dtype=np.float32)

    def predict_rows(self, partial: Any, task_embeddings: np.ndarray | None = None) -> np.ndarray:
        """Batch fold-in: each row of `partial` (B, N) holds probe values and NaN elsewhere."""
        p = np.asarray(partial, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.n_items:
            raise ForgettingError(
                f"partial rows must be (B, {self.n_items}), got {p.shape}; one column per example."
            )
        out = np.empty(p.shape, dtype=np.float32)
        for b in range(p.shape[0]):  # loop over tasks (B), never over examples
            cols = np.flatnonzero(~np.isnan(p[b]))
            emb = None if task_embeddings is None else task_embeddings[b]
            out[b] = self.fold_in(cols, p[b, cols], emb)
        return out

    @abstractmethod
    def _fit(self, z: np.ndarray, **kwargs: Any) -> None: ...

    @abstractmethod
    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray: ...
