"""Completion methods: predict a new task's forgetting row from k probes.

Usage::

    from forgetting.completion import make_completer, METHODS
    c = make_completer("mf", rank=5).fit(Z_known)        # kwargs override the method's config
    row = c.fold_in(cols, values)

`METHODS` are the user-facing methods, in evaluation order (the additive baseline first);
`REFERENCE_METHODS` ("refit", the paper-style leave-one-out refit; "random", a chance-level
prediction at the probes' level; "semantic_only") are also accepted by `make_completer` but are
evaluation references only. Both lists come from the one registry, `forgetting.methods`, which
also holds the release controls (random replay, oracle, none). Defaults: the kNN variants follow
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

from forgetting.completion.additive import AdditiveConfig
from forgetting.completion.als import ALSConfig
from forgetting.completion.base import Completer
from forgetting.completion.factory import make_completer
from forgetting.completion.knn import KNNConfig
from forgetting.completion.mf import MFConfig
from forgetting.completion.random import RandomConfig
from forgetting.completion.refit import RefitConfig
from forgetting.completion.semantic import SemanticConfig
from forgetting.methods import EVALUATION_ORDER, REFERENCE_METHODS

METHODS: tuple[str, ...] = EVALUATION_ORDER  # the completion methods, baseline first

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
