"""Paper-style reference: refit the whole model from scratch with the new, masked row appended.

Usage::

    c = make_completer("refit", base="mf").fit(Z)
    row = c.fold_in(cols, values)     # appends [NaN.., probes, ..NaN], fits `base` again

This is what the reference code did for every test task (leave-one-out, `create_loo_ds`). It is
here only so the benchmark can show what fold-in saves; it reads and copies the whole matrix per
task. The prediction is the refitted model's reconstruction of the appended row for bases that
have one ("additive", "mf"), and otherwise the refitted base's fold-in of the probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forgetting.completion.base import Completer


@dataclass
class RefitConfig:
    base: str = "mf"
    base_kwargs: dict[str, Any] = field(default_factory=dict)


class RefitCompleter(Completer):
    name = "refit"

    def __init__(
        self, config: RefitConfig | None, make_completer: Callable[..., Completer]
    ) -> None:
        """`make_completer(name, **kwargs)` builds the inner model (the factory passes itself:
        this module cannot import the factory, which imports it)."""
        super().__init__()
        self.config = config or RefitConfig()
        self._make = lambda: make_completer(self.config.base, **self.config.base_kwargs)
        self.min_rows = max(self._make().min_rows - 1, 1)

    def _fit(self, z: np.ndarray, **kwargs: Any) -> None:
        self.z = z
        self.fit_kwargs = kwargs

    def _fold_in(
        self, cols: np.ndarray, values: np.ndarray, task_embedding: np.ndarray | None
    ) -> np.ndarray:
        row = np.full((1, self.z.shape[1]), np.nan, dtype=np.float32)
        row[0, cols] = values
        base = self._make().fit(np.vstack([self.z, row]), **self.fit_kwargs)
        if hasattr(base, "fitted_row"):
            return base.fitted_row(self.z.shape[0])
        return base.fold_in(cols, values, task_embedding)
