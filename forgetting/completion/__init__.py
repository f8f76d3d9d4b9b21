"""Completion methods: predict a new task's forgetting row from k probes.

Usage::

    from forgetting.completion import make_completer, METHODS
    c = make_completer("mf", rank=5).fit(Z_known)        # kwargs override the method's config
    row = c.fold_in(cols, values)

`METHODS` are the user-facing methods; "refit" (the paper-style leave-one-out refit) and
"random" (a chance-level prediction at the probes' level) are also accepted by `make_completer`
but are evaluation references only. Defaults: the kNN variants follow
the reference study (k = 40, MSD) except `knn_pearson`, whose k = 10 measured better (it averages
fewer, more similar tasks). `python -m bench.completion --json` (full mode: planted 100 x 20,000,
rank 5, 80 known rows, 20 test tasks x 3 probe seeds, 30 probes; section `knn_pearson_k`),
RMSE×100 / precision@1 % / F1 (Z > row median) for k = 10, 20, 40:
- Gaussian:     6.56 / 0.516 / 0.843,  7.03 / 0.497 / 0.836,  7.50 / 0.484 / 0.830;
- heavy-tailed: 7.14 / 0.554 / 0.842,  7.38 / 0.551 / 0.841,  7.83 / 0.532 / 0.835.
With fewer known tasks the choice matters less (a planted 52 x 20,000 draw, seed 3, 47 known
rows, 5 test tasks x 3 seeds: RMSE×100 6.90 / 6.96 / 6.97), and every k >= the number of known
rows is the same model. Fold-in cost grows with k: it reads k neighbour rows of N residuals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from forgetting.completion.additive import AdditiveCompleter, AdditiveConfig
from forgetting.completion.als import ALSConfig, ImplicitALSCompleter
from forgetting.completion.base import Completer
from forgetting.completion.knn import KNNCompleter, KNNConfig
from forgetting.completion.mf import MFCompleter, MFConfig
from forgetting.completion.random import RandomCompleter, RandomConfig
from forgetting.completion.refit import RefitCompleter, RefitConfig
from forgetting.completion.semantic import SemanticCompleter, SemanticConfig
from forgetting.errors import ForgettingError

METHODS: tuple[str, ...] = ("additive", "knn", "knn_pearson", "mf", "als", "semantic")
REFERENCE_METHODS: tuple[str, ...] = ("refit", "random", "semantic_only")

_REGISTRY: dict[str, tuple[type, Callable[..., Completer], dict[str, Any]]] = {
    "additive": (AdditiveConfig, AdditiveCompleter, {}),
    "knn": (KNNConfig, KNNCompleter, {"similarity": "msd", "k": 40}),
    "knn_pearson": (KNNConfig, KNNCompleter, {"similarity": "pearson", "k": 10}),
    "mf": (MFConfig, MFCompleter, {}),
    "als": (ALSConfig, ImplicitALSCompleter, {}),
    "semantic": (SemanticConfig, SemanticCompleter, {}),
    # The prior approach as the study ran it: similarity alone, no example bias from the matrix.
    "semantic_only": (SemanticConfig, SemanticCompleter, {"use_bias": False}),
    "refit": (RefitConfig, RefitCompleter, {}),
    "random": (RandomConfig, RandomCompleter, {}),
}


def make_completer(name: str, **kwargs: Any) -> Completer:
    """Build method `name` with its dataclass config; keyword arguments override fields."""
    if name not in _REGISTRY:
        raise ForgettingError(
            f"unknown completion method {name!r}; choose one of {', '.join(METHODS + REFERENCE_METHODS)}."
        )
    config_cls, cls, defaults = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ForgettingError(
            f"method {name!r} has no option(s) {unknown}; valid options: {sorted(fields)}."
        )
    return cls(config_cls(**{**defaults, **kwargs}))


__all__ = [
    "METHODS",
    "REFERENCE_METHODS",
    "ALSConfig",
    "AdditiveConfig",
    "Completer",
    "KNNConfig",
    "MFConfig",
    "RandomConfig",
    "RefitConfig",
    "SemanticConfig",
    "make_completer",
]
