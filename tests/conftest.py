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


import pytest


@pytest.fixture(autouse=True)
def _fresh_cli_overrides() -> None:
    """`ftctl --workspace X ...` stores X for the process (one invocation per process in real
    use); tests invoke the app many times in one process, so no test inherits another's."""
    from cli.common import ROOT_OVERRIDES

    ROOT_OVERRIDES.clear()
