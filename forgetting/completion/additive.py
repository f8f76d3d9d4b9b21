"""Additive baseline: ẑ_ij = μ + b_task + b_example.

Usage::

    c = AdditiveCompleter(AdditiveConfig(reg_item=1.0)).fit(Z)
    row = c.fold_in(cols, values)   # b_task = mean residual of the probes; b_example from fit

The reference study's "additive" method (surprise BaselineOnly). Fold-in estimates only the
new task's bias, so it ranks every task's examples identically — the bar the others must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetting.completion.base import BiasModel, Completer


@dataclass
class AdditiveConfig:
    reg_item: float = 1.0  # shrinks example biases measured on few tasks towards 0
    reg_task: float = 0.0  # fold-in task bias penalty (0: plain mean of the probe residuals)
    iters: int = 10


class AdditiveCompleter(Completer):
    name = "additive"
    min_rows = 1

    def __init__(self, config: AdditiveConfig | None = None) -> None:
        super().__init__()
        self.config = config or AdditiveConfig()

    def _fit(self, z: np.ndarray, **kwargs: Any) -> None:
        cfg = self.config
        self.bias = BiasModel.fit(z, cfg.reg_item, cfg.reg_task, cfg.iters)

    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray:
        b = self.bias.fold_task_bias(cols, values, self.config.reg_task)
        return self.bias.item_bias + np.float32(self.bias.mu + b)

    def fitted_row(self, i: int) -> np.ndarray:
        """Reconstruction of known row i (used by the paper-style refit reference)."""
        return self.bias.item_bias + np.float32(self.bias.mu + self.bias.task_bias[i])
