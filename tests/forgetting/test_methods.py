"""forgetting.methods: the one registry of method names, against what the completers really do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import forgetting.completion as completion
from forgetting.completion import Completer, make_completer
from forgetting.completion.factory import _REGISTRY
from forgetting.errors import ForgettingError
from forgetting.methods import (
    COMPLETION_METHODS,
    CONTROLS,
    EVALUATION_ORDER,
    REFERENCE_METHODS,
    REGISTRY,
    RELEASE_METHODS,
    check_method,
    get_method,
    method_help,
)

COMPLETERS = [m for m in REGISTRY if m.is_completer]


def test_the_lists_and_their_orders() -> None:
    assert RELEASE_METHODS == (
        "mf", "als", "knn", "knn_pearson", "additive", "semantic", "random", "oracle", "none"
    )  # fmt: skip
    assert COMPLETION_METHODS == ("mf", "als", "knn", "knn_pearson", "additive", "semantic")
    assert CONTROLS == ("random", "oracle", "none")
    assert REFERENCE_METHODS == ("refit", "random", "semantic_only")
    assert sorted(EVALUATION_ORDER) == sorted(COMPLETION_METHODS)
    # forgetting.completion derives its lists (evaluation order, baseline first) from here.
    assert completion.METHODS == ("additive", "knn", "knn_pearson", "mf", "als", "semantic")
    assert completion.REFERENCE_METHODS == REFERENCE_METHODS
    # One entry per (name, kind): "random" is twice, once per role.
    assert len({(m.name, m.kind) for m in REGISTRY}) == len(REGISTRY)
    assert all(m.summary and "\n" not in m.summary for m in REGISTRY)


def test_the_factory_builds_exactly_the_completer_kinds() -> None:
    assert set(_REGISTRY) == set(COMPLETION_METHODS) | set(REFERENCE_METHODS)
    assert list(_REGISTRY) == [*EVALUATION_ORDER, *REFERENCE_METHODS]  # error-message order


@pytest.mark.parametrize("method", COMPLETERS, ids=lambda m: f"{m.kind}:{m.name}")
def test_every_completer_kind_is_buildable_and_its_flags_match_the_code(
    method, small_z: np.ndarray
) -> None:
    c = make_completer(method.name)
    assert isinstance(c, Completer)
    assert method.needs_known_rows == (c.min_rows >= 1)
    emb = np.random.default_rng(0).standard_normal((small_z.shape[1], 4)).astype(np.float32)
    if method.needs_embeddings:
        with pytest.raises(ForgettingError, match="needs example embeddings"):
            make_completer(method.name).fit(small_z)
        c = make_completer(method.name, example_embeddings=emb).fit(small_z)
        row = c.fold_in([0, 5, 9], small_z[0, [0, 5, 9]], task_embedding=emb[0])
    else:
        row = c.fit(small_z).fold_in([0, 5, 9], small_z[0, [0, 5, 9]])
    assert row.shape == (small_z.shape[1],) and np.isfinite(row).all()


@pytest.mark.parametrize("name", ["oracle", "none"])
def test_controls_are_not_completers(name: str) -> None:
    assert not get_method(name).is_completer
    with pytest.raises(ForgettingError, match=rf"'{name}' is a release control .*choose additive"):
        make_completer(name)


def test_random_is_a_control_for_releases_and_a_reference_for_evaluations() -> None:
    assert get_method("random").kind == "control" and not get_method("random").is_completer
    assert get_method("random", "reference").is_completer
    assert type(make_completer("random")).__name__ == "RandomCompleter"  # the reference one
    assert not get_method("random", "control").needs_known_rows  # uniform replay reads no rows


def test_help_lists_every_release_method() -> None:
    assert method_help() == "mf, als, knn, knn_pearson, additive, semantic, random, oracle or none"
    assert all(name in method_help() for name in RELEASE_METHODS)
    assert method_help(["mf"]) == "mf" and method_help(["random", "random"]) == "random"


def test_check_method_names_the_choices_and_why() -> None:
    assert check_method("oracle") == "oracle"
    assert check_method("knn", COMPLETION_METHODS) == "knn"
    with pytest.raises(ForgettingError, match=r"unknown method 'svd\+\+'; choose mf, .* or none"):
        check_method("svd++")
    with pytest.raises(ForgettingError, match=r"'refit' is a reference method .*not accepted"):
        check_method("refit")
    with pytest.raises(ForgettingError, match=r"'oracle' is a control method .*choose mf, als"):
        check_method("oracle", COMPLETION_METHODS)
    with pytest.raises(ForgettingError, match=r"unknown reference method 'mf'; choose refit"):
        get_method("mf", "reference")


def test_importing_the_registry_imports_no_numpy() -> None:
    code = "import sys, forgetting.methods; print('numpy' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"  # the CLI imports it at start-up
