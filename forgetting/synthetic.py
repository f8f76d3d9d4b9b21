"""Planted forgetting matrices with a known answer (for tests and the completion benchmark).

Usage::

    p = planted_matrix(100, 20_000, rank=5, noise=0.03, seed=0)              # Gaussian
    p = planted_matrix(100, 20_000, rank=5, noise=0.03, seed=0, heavy_tailed=True)
    p.z (M, N) float32; p.task_factors (M, r); p.example_factors (N, r); p.signal = z - noise

Z = μ + b_task + b_example + P Qᵀ + ε. Scales follow the prototype world (mean ≈ 0.2 nats,
std ≈ 0.1, a dominant first component, nearly all entries positive). The heavy-tailed variant
draws example biases and noise from Student-t (ν = 3 and ν = 2.5), so a few examples are
forgotten enormously and a few entries are outliers — the case where squared-loss fits suffer.
Generation is chunked over rows, so a 1,000 x 200,000 float32 matrix (0.8 GB) is written into a
preallocated (optionally memory-mapped) array without float64 temporaries of its full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Planted:
    z: np.ndarray  # (M, N) float32, observed = signal + noise
    mu: float
    task_bias: np.ndarray
    example_bias: np.ndarray
    task_factors: np.ndarray  # (M, r)
    example_factors: np.ndarray  # (N, r)

    def signal_rows(self, rows: np.ndarray) -> np.ndarray:
        """Noise-free rows (float32)."""
        return (
            self.mu
            + self.task_bias[rows, None]
            + self.example_bias[None, :]
            + self.task_factors[rows] @ self.example_factors.T
        ).astype(np.float32)


def planted_matrix(
    m: int,
    n: int,
    *,
    rank: int = 5,
    noise: float = 0.03,
    seed: int = 0,
    heavy_tailed: bool = False,
    out: np.ndarray | None = None,
    chunk_rows: int = 64,
) -> Planted:
    """Draw a planted matrix (see module docstring); `out` may be a preallocated/memmap array."""
    rng = np.random.default_rng(seed)
    scales = 0.08 * 0.7 ** np.arange(rank)  # decaying component strengths
    p = (rng.standard_normal((m, rank)) * scales).astype(np.float32)
    q = rng.standard_normal((n, rank)).astype(np.float32)
    bt = rng.gamma(4.0, 0.04, m).astype(np.float32)  # task scale: all tasks forget something
    if heavy_tailed:
        bi = (0.03 * rng.standard_t(3.0, n)).astype(np.float32)
    else:
        bi = (0.04 * rng.standard_normal(n)).astype(np.float32)
    mu = 0.05
    z = np.empty((m, n), np.float32) if out is None else out
    for s in range(0, m, chunk_rows):
        e = slice(s, min(s + chunk_rows, m))
        rows = e.stop - e.start
        eps = (
            rng.standard_t(2.5, (rows, n)) * (noise * 0.6)
            if heavy_tailed
            else (rng.standard_normal((rows, n), dtype=np.float32) * noise)
        )
        z[e] = mu + bt[e, None] + bi[None, :] + p[e] @ q.T + eps.astype(np.float32)
    return Planted(z, mu, bt, bi, p, q)
