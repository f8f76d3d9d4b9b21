"""Biased matrix factorisation, fitted by ALS with L2, with a ridge fold-in for new tasks.

Usage::

    c = MFCompleter(MFConfig(rank=5, fold_lambda=1.0)).fit(Z)
    row = c.fold_in(cols, values)      # solves 1 + rank numbers; reads Q[cols] and Q (N x rank)

Model: z_ij = μ + b_i + c_j + p_i·q_j.

Fit: biases from the additive model, factors initialised from a (randomized) SVD of the
zero-filled residual, then `iters` ALS sweeps. Each half-sweep solves every row (or column)
ridge system at once: the per-row Gram matrices are one `mask @ outer(factors)` matmul, and a
fully observed matrix shares a single Gram matrix. The task and example biases ride along as an
extra factor with a tiny penalty (so a never-observed column resolves to 0 instead of a
singular system).

Afterwards the basis is rotated to the SVD of P Qᵀ and scaled so that each example-factor column
has mean square 1 (Q = V·√N): the fold-in ridge `fold_lambda` then means the same thing for
every N, and the prototype's λ = 1 carries over.

One known row (M = 1): the example biases, unpenalised, absorb that row entirely (each column
has one entry and one free bias), so no factor is identifiable; the fit then keeps rank 0 and the
fold-in is the known row shifted to the probes' level (`rank_` says which rank was used). That
is what the factor fit converges to anyway, minus a meaningless direction the ridge would
otherwise fit noise into.

Fold-in (not a refit): w = argmin ||[1, Q_probes] w - (z_probes - μ - c_probes)||² + λ||w[1:]||²,
with the task bias w₀ unpenalised; ẑ = μ + c + w₀ + Q w[1:]. It touches only c (N,), Q (N, r)
and the k probe values, never the known matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetting.completion.base import BiasModel, Completer
from forgetting.errors import ForgettingError
from forgetting.linalg import masked_ridge_rows, randomized_svd, ridge_fold_in


@dataclass
class MFConfig:
    rank: int = 5
    reg: float = 0.01  # ALS L2 on task and example factors in fit; fold-in is insensitive to it
    fold_lambda: float = 1.0  # ridge on the new task's factors at fold-in (bias unpenalised)
    iters: int = 10  # ALS sweeps after the SVD initialisation
    reg_item: float = 1.0  # additive-initialisation shrinkage of example biases
    seed: int = 0  # randomized-SVD initialisation


def rotate_to_svd(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-express P Qᵀ as (A·S/√N) (V·√N)ᵀ with V orthonormal; returns (P', Q', s)."""
    n = q.shape[0]
    uq, rq = np.linalg.qr(q)
    a, s, bt = np.linalg.svd(p @ rq.T, full_matrices=False)
    v = uq @ bt.T
    return (a * s / np.sqrt(n)).astype(np.float32), (v * np.sqrt(n)).astype(np.float32), s


class MFCompleter(Completer):
    name = "mf"
    min_rows = 1

    def __init__(self, config: MFConfig | None = None) -> None:
        super().__init__()
        self.config = config or MFConfig()
        if self.config.rank < 1:
            raise ForgettingError(f"MF rank must be >= 1, got {self.config.rank}.")

    def _fit(self, z: np.ndarray, **kwargs: Any) -> None:
        cfg = self.config
        m, n = z.shape
        r = min(cfg.rank, m, n) if m > 1 else 0  # M = 1: see the module docstring
        self.rank_ = r
        bias = BiasModel.fit(z, cfg.reg_item, 0.0)
        if r == 0:
            self._fit_biases_only(z, bias)
            return
        obs = ~np.isnan(z)
        mask = None if obs.all() else obs
        resid = np.where(obs, z - bias.baseline(), np.float32(0.0))
        u, s, vt = randomized_svd(resid, r, seed=cfg.seed)
        del resid
        root = np.sqrt(s)
        p = (u * root).astype(np.float32)
        q = (vt.T * root).astype(np.float32)
        bt, bi = bias.task_bias.astype(np.float32), bias.item_bias.astype(np.float32)
        mu = np.float32(bias.mu)
        pen = np.r_[1e-6, np.full(r, cfg.reg)].astype(np.float32)
        for _ in range(cfg.iters):
            f = np.hstack([np.ones((n, 1), np.float32), q])
            x = masked_ridge_rows(z - mu - bi[None, :], mask, f, pen)
            bt, p = x[:, 0].astype(np.float32), x[:, 1:].astype(np.float32)
            g = np.hstack([np.ones((m, 1), np.float32), p])
            y = masked_ridge_rows(
                (z - mu - bt[:, None]).T, None if mask is None else mask.T, g, pen
            )
            bi, q = y[:, 0].astype(np.float32), y[:, 1:].astype(np.float32)
        self.mu = float(mu)
        self.task_bias = bt
        self.item_bias = bi
        self.task_factors, self.item_factors, self.singular_values = rotate_to_svd(p, q)

    def _fit_biases_only(self, z: np.ndarray, bias: BiasModel) -> None:
        """Rank 0 (M = 1): μ, b_task and unpenalised example biases — the row itself."""
        m, n = z.shape
        mu = np.float32(bias.mu)
        bt = bias.task_bias.astype(np.float32)
        obs = ~np.isnan(z)
        # One row: b_j = z_j - μ - b_task (0 where unobserved); the tiny ALS bias penalty of the
        # factor fit (1e-6) would give the same numbers to float precision.
        bi = np.where(obs, z - mu - bt[:, None], np.float32(0.0)).sum(axis=0) / np.maximum(
            obs.sum(axis=0), 1
        )
        self.mu = float(mu)
        self.task_bias = bt
        self.item_bias = bi.astype(np.float32)
        self.task_factors = np.zeros((m, 0), np.float32)
        self.item_factors = np.zeros((n, 0), np.float32)
        self.singular_values = np.zeros(0)

    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray:
        y = values - self.mu - self.item_bias[cols]
        w = ridge_fold_in(self.item_factors[cols].astype(np.float64), y, self.config.fold_lambda)
        return (
            self.item_bias
            + np.float32(self.mu + w[0])
            + self.item_factors @ w[1:].astype(np.float32)
        )

    def fitted_row(self, i: int) -> np.ndarray:
        """Reconstruction of known row i (used by the paper-style refit reference)."""
        return (
            self.item_bias
            + np.float32(self.mu + self.task_bias[i])
            + self.item_factors @ self.task_factors[i]
        )
