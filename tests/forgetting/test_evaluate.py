"""The leave-tasks-out harness on a planted matrix: splits, leaks, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.evaluate import EvalConfig, evaluate, make_folds
from forgetting.synthetic import Planted


def test_random_split_ranks_methods_and_serialises(planted: Planted) -> None:
    cfg = EvalConfig(methods=("additive", "mf"), seeds=(0, 1, 2), k=30)
    rep = evaluate(planted.z, cfg)
    add, mf = rep.results["additive"], rep.results["mf"]
    assert mf.metrics["rmse_x100"]["mean"] < add.metrics["rmse_x100"]["mean"]
    assert mf.metrics["f1_median"]["mean"] > add.metrics["f1_median"]["mean"]
    assert len(mf.metrics["rmse_x100"]["per_seed"]) == 3
    assert rep.folds == [sorted(rep.folds[0])] and len(rep.folds[0]) == 8
    doc = json.loads(rep.to_json())
    assert doc["results"]["mf"]["metrics"]["precision_at_0.01"]["mean"] >= 0


def test_family_and_loo_splits(planted: Planted) -> None:
    fams = ["a"] * 20 + ["b"] * 20
    folds = make_folds(40, EvalConfig(split="family"), fams)
    assert [t.size for _, t in folds] == [20, 20]
    assert all(np.intersect1d(k, t).size == 0 for k, t in folds)
    z = planted.z[:6, :400]
    rep = evaluate(z, EvalConfig(methods=("additive",), seeds=(0,), split="loo", k=10))
    assert rep.folds == [[i] for i in range(6)]
    with pytest.raises(ForgettingError, match="families"):
        evaluate(z, EvalConfig(split="family"))


def test_probes_never_held_out_and_partial_rows_scored(planted: Planted) -> None:
    z = planted.z[:12, :500].copy()
    z[-1, :100] = np.nan  # a test task measured on only part of the set
    exclude = np.zeros(500, bool)
    exclude[400:] = True
    rep = evaluate(
        z,
        EvalConfig(methods=("mf",), seeds=(0,), split="loo", k=20, probe_strategy="leverage"),
        exclude=exclude,
    )
    assert np.isfinite(rep.results["mf"].metrics["rmse_x100"]["mean"])
