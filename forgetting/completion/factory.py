"""`make_completer`: a completion method (or evaluation reference) by name, with its config.

Usage::

    from forgetting.completion import make_completer      # re-exported from here
    c = make_completer("mf", rank=5).fit(Z_known)        # kwargs override the method's config

Which names exist, and what each needs, is `forgetting.methods`' registry; this module maps
the completer-kind names to their classes and default configs. It lives apart from the
package `__init__` so that the "refit" reference can be handed this factory for its inner
model, instead of importing the package that imports it.
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
from forgetting.methods import CONTROLS, get_method, method_help


def _refit(config: RefitConfig) -> RefitCompleter:
    return RefitCompleter(config, make_completer)


# name -> (config class, builder taking a config, default overrides of the config's fields),
# in the registry's evaluation order (EVALUATION_ORDER, then REFERENCE_METHODS): error messages
# list the choices in this order. tests/forgetting/test_methods.py checks the names match.
_REGISTRY: dict[str, tuple[type, Callable[[Any], Completer], dict[str, Any]]] = {
    "additive": (AdditiveConfig, AdditiveCompleter, {}),
    "knn": (KNNConfig, KNNCompleter, {"similarity": "msd", "k": 40}),
    "knn_pearson": (KNNConfig, KNNCompleter, {"similarity": "pearson", "k": 10}),
    "mf": (MFConfig, MFCompleter, {}),
    "als": (ALSConfig, ImplicitALSCompleter, {}),
    "semantic": (SemanticConfig, SemanticCompleter, {}),
    "refit": (RefitConfig, _refit, {}),
    "random": (RandomConfig, RandomCompleter, {}),
    # The prior approach as the study ran it: similarity alone, no example bias from the matrix.
    "semantic_only": (SemanticConfig, SemanticCompleter, {"use_bias": False}),
}


def make_completer(name: str, **kwargs: Any) -> Completer:
    """Build method `name` with its dataclass config; keyword arguments override fields."""
    if name not in _REGISTRY:
        choices = method_help(list(_REGISTRY))
        if name in CONTROLS:  # a release control replays without a prediction: no completer
            raise ForgettingError(
                f"{name!r} is a release control ({get_method(name).summary}), not a completion "
                f"method; choose {choices}."
            )
        raise ForgettingError(f"unknown completion method {name!r}; choose {choices}.")
    config_cls, build, defaults = _REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ForgettingError(
            f"method {name!r} has no option(s) {unknown}; valid options: {sorted(fields)}."
        )
    return build(config_cls(**{**defaults, **kwargs}))
