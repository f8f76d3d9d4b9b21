"""Semantic-similarity baseline: forgetting ∝ cosine(task embedding, example embedding).

Usage::

    c = SemanticCompleter(SemanticConfig(example_embeddings=E, use_bias=True)).fit(Z)
    row = c.fold_in(cols, values, task_embedding=t)     # t: (d,), E: (N, d)

The "prior approach" the study beats: the reference found Pearson 0.04-0.16 between forgetting
and task-example embedding similarity. Embeddings are computed elsewhere and passed in as
arrays. Prediction: ẑ_j = a + s·cos(t, e_j) (+ c_j, the example bias of the known rows, when
`use_bias`), with a and s fitted to the probes by least squares (s = 0 with fewer than 2 probes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetting.completion.base import BiasModel, Completer
from forgetting.errors import ForgettingError


@dataclass
class SemanticConfig:
    example_embeddings: np.ndarray | None = None  # (N, d)
    use_bias: bool = True
    reg_item: float = 1.0


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class SemanticCompleter(Completer):
    name = "semantic"
    min_rows = 1

    def __init__(self, config: SemanticConfig | None = None) -> None:
        super().__init__()
        self.config = config or SemanticConfig()

    def _fit(self, z: np.ndarray, **kwargs: Any) -> None:
        emb = kwargs.get("example_embeddings", self.config.example_embeddings)
        if emb is None:
            raise ForgettingError(
                "the semantic method needs example embeddings; pass "
                "make_completer('semantic', example_embeddings=E) with E of shape (N, d)."
            )
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != z.shape[1] or not np.isfinite(emb).all():
            raise ForgettingError(
                f"example embeddings must be finite (N={z.shape[1]}, d), got {emb.shape}; "
                "embed every upstream example in column order."
            )
        self.emb = _unit(emb)
        self.bias = BiasModel.fit(z, self.config.reg_item, 0.0)

    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray:
        if task_embedding is None:
            raise ForgettingError(
                "the semantic method needs the new task's embedding; pass fold_in(..., "
                "task_embedding=t) with t of shape (d,)."
            )
        t = np.asarray(task_embedding, dtype=np.float32).reshape(-1)
        if t.shape[0] != self.emb.shape[1] or not np.isfinite(t).all():
            raise ForgettingError(
                f"task embedding must be finite with d={self.emb.shape[1]}, got {t.shape}."
            )
        cos = self.emb @ _unit(t)
        offset = self.bias.item_bias if self.config.use_bias else np.zeros(self.n_items, np.float32)
        y = values - offset[cols]
        if cols.size >= 2 and np.ptp(cos[cols]) > 0:
            s, a = np.polyfit(cos[cols].astype(np.float64), y, 1)
        else:
            s, a = 0.0, float(y.mean()) if y.size else self.bias.mu
        return offset + np.float32(a) + np.float32(s) * cos
