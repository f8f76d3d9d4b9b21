"""Small planted matrices shared by the forgetting tests (known answers, seconds to fit)."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.synthetic import Planted, planted_matrix


@pytest.fixture(scope="session")
def planted() -> Planted:
    """40 tasks x 2,000 examples, rank 3 + biases + Gaussian noise 0.02."""
    return planted_matrix(40, 2000, rank=3, noise=0.02, seed=1)


@pytest.fixture(scope="session")
def small_z() -> np.ndarray:
    """8 x 300 planted matrix for edge-case tests."""
    return planted_matrix(8, 300, rank=2, noise=0.01, seed=2).z
