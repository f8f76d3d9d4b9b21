"""Shared test set-up: offline Hugging Face, one BLAS/torch thread, deterministic seeds."""

from __future__ import annotations

import os

# Set before anything imports transformers/datasets: a hub lookup offline otherwise hangs ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


import inspect
import types
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

# A test that uses one of these names, in its body, in a fixture it requests or in a function of
# its own module that it calls, talks to a real service: Redis / Celery workers (the helpers of
# tests/infra/workers.py) or PostgreSQL (psycopg2). It is marked `integration` here, so that
# `make test-fast` (no services) skips it without each test file having to remember the marker.
SERVICE_NAMES = frozenset({"require_redis", "cluster", "private_redis", "port_open", "psycopg2",
                           "redis"})

# `heavy`: whole pipelines or many training steps, the bulk of the suite's minutes (measured
# 2026-12-03 on the 2-core box). `make test` runs them; `make test-fast` leaves them out. Keyed by
# file: a test renamed inside keeps the marker, and a listed file that is gone is warned of.
HEAVY = {
    "tests/bench/test_science_quick.py": "`python -m bench.science --quick` end to end, ~150 s",
    "tests/service/test_demo.py": "`ftctl demo` end to end on the tiny world, ~60 s",
    "tests/service/test_release_cli.py": "one CLI session (init, statistics, releases), ~55 s",
    "tests/service/test_auto_ratio.py": "five tiny releases under --replay-ratio auto, ~40 s",
    "tests/service/test_chain.py": "a chain of four tiny releases, ~45 s",
}


def _code_names(code: types.CodeType) -> Iterator[str]:
    """Global, attribute and imported names a function's code uses, nested functions included."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _uses_a_service(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    todo: list[Any] = [getattr(item, "obj", None)]
    info = getattr(item, "_fixtureinfo", None)  # the fixtures it requests, transitively
    if info is not None:
        todo += [d.func for defs in info.name2fixturedefs.values() for d in defs]
    seen: set[types.CodeType] = set()
    while todo:
        fn = todo.pop()
        fn = getattr(fn, "__func__", fn)  # a bound method of a test class
        code = getattr(fn, "__code__", None)
        if code is None or code in seen:
            continue
        seen.add(code)
        names = set(_code_names(code))
        if names & SERVICE_NAMES:
            return True
        # Follow the helpers of the test's own module (a `start_stack()` that calls `cluster()`).
        todo += [f for n in names if inspect.isfunction(f := getattr(module, n, None))
                 and f.__module__ == getattr(module, "__name__", None)]
    return False


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: it must see the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for path, why in HEAVY.items():
        if not (root / path).exists():
            warnings.warn(f"tests/conftest.py HEAVY names {path} ({why}), which is gone: update it",
                          pytest.PytestConfigWarning, stacklevel=1)
    for item in items:
        if item.nodeid.split("::")[0] in HEAVY:
            item.add_marker(pytest.mark.heavy)
        if _uses_a_service(item):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _fresh_cli_overrides() -> None:
    """`ftctl --workspace X ...` stores X for the process (one invocation per process in real
    use); tests invoke the app many times in one process, so no test inherits another's."""
    from cli.common import ROOT_OVERRIDES

    ROOT_OVERRIDES.clear()
