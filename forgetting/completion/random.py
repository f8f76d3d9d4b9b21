"""Chance-level reference: a random prediction at the level of the task's probes.

Usage::

    c = RandomCompleter(RandomConfig(seed=0)).fit(Z)
    row = c.fold_in(cols, values)   # probe mean + Gaussian noise with the probes' spread

It knows nothing about which examples a task forgets, so its ranking metrics (F1, AUC,
precision@k, Spearman) sit at chance and its RMSE is that of a right-level, wrong-shape guess:
the floor every real method must clear. Evaluation only; releases use uniform replay instead.
Deterministic: the noise is seeded by the config seed and the probed columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetting.completion.base import Completer


@dataclass
class RandomConfig:
    seed: int = 0


class RandomCompleter(Completer):
    name = "random"
    min_rows = 1

    def __init__(self, config: RandomConfig | None = None) -> None:
        super().__init__()
        self.config = config or RandomConfig()

    def _fit(self, z: np.ndarray, **kwargs: Any) -> None:
        pass  # nothing to learn: that is the point

    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray:
        assert self.n_items is not None
        rng = np.random.default_rng([self.config.seed, *cols.tolist()])
        level = float(values.mean()) if values.size else 0.0
        spread = float(values.std()) if values.size > 1 else 1.0
        row = level + spread * rng.standard_normal(self.n_items)
        row[cols] = values  # the measured entries are known
        return row
