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


@pytest.mark.parametrize("strategy", ["random", "leverage"])
def test_probes_never_held_out_never_unmeasured_and_recorded(
    planted: Planted, strategy: str
) -> None:
    z = planted.z[:12, :500].copy()
    z[-1, :100] = np.nan  # a test task measured on only part of the set
    exclude = np.zeros(500, bool)
    exclude[400:] = True
    cfg = EvalConfig(
        methods=("additive", "mf"), seeds=(0, 1, 2), split="loo", k=20, probe_strategy=strategy
    )
    rep = evaluate(z, cfg, exclude=exclude)
    assert np.isfinite(rep.results["mf"].metrics["rmse_x100"]["mean"])
    assert set(rep.probes) == {0, 1, 2}
    for seed in cfg.seeds:
        assert set(rep.probes[seed]) == set(range(12))  # every (seed, test task) is recorded
        for task in range(12):
            cols = np.array(rep.probe_columns(seed, task))
            assert cols.size == 20 and np.unique(cols).size == 20
            assert not exclude[cols].any(), (seed, task)  # never a held-out example
            assert np.isfinite(z[task, cols]).all()  # never an unmeasured entry
    assert not np.isin(np.array(rep.probe_columns(0, 11)), np.arange(100)).any()
    doc = json.loads(rep.to_json())
    assert doc["probe_sets"][doc["probes"]["0"]["3"]] == rep.probe_columns(0, 3)


def test_leverage_is_computed_once_per_fold(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    import forgetting.evaluate as ev
    import forgetting.probes as probes

    calls: list[tuple[int, int]] = []
    real = probes.leverage_scores

    def counting(known: np.ndarray, *a: object, **kw: object) -> np.ndarray:
        calls.append(known.shape)
        return real(known, *a, **kw)

    monkeypatch.setattr(ev, "leverage_scores", counting)
    monkeypatch.setattr(probes, "leverage_scores", counting)
    z = planted.z[:10, :400]
    cfg = EvalConfig(
        methods=("additive", "mf"), seeds=(0, 1, 2, 3), split="loo", k=10, probe_strategy="leverage"
    )
    evaluate(z, cfg)
    assert calls == [(9, 400)] * 10  # one SVD per fold, not per seed x task x method


def test_methods_see_identical_probes(planted: Planted) -> None:
    # Probes are drawn once per (fold, seed, task): two runs with different method lists
    # record the same probe sets, so methods are compared on the same measurements.
    z = planted.z[:20, :600]
    a = evaluate(
        z, EvalConfig(methods=("additive",), seeds=(0, 1), k=15, probe_strategy="leverage")
    )
    b = evaluate(
        z, EvalConfig(methods=("mf", "knn"), seeds=(0, 1), k=15, probe_strategy="leverage")
    )
    assert a.probes == b.probes and a.probe_sets == b.probe_sets
    assert len(a.probe_sets) == 2  # full rows: one shared set per seed


def test_several_random_splits_compare_methods_by_split() -> None:
    from forgetting.evaluate import evaluate_splits

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((20, 3)) @ rng.standard_normal((3, 400))
         + 0.3 * rng.standard_normal((20, 400))).astype(np.float32)
    cfg = EvalConfig(methods=("additive", "mf"), k=30, seeds=(0, 1))
    r = evaluate_splits(z, cfg, range(5))
    folds = [tuple(rep["folds"][0]) for rep in r["reports"]]
    assert len(set(folds)) == 5  # five different sets of test tasks
    mf = r["results"]["mf"]["rmse_x100"]
    assert len(mf["per_split"]) == 5 and mf["std"] > 0
    assert r["vs_control"]["mf"]["rmse_x100"]["mean_diff"] < 0  # planted rank 3: MF wins...
    assert r["vs_control"]["mf"]["rmse_x100"]["t_p"] < 0.01  # ...on every split
    assert set(r["results"]["mf"]) == {"rmse_x100", "f1_median", "roc_auc_median", "spearman",
                                       "precision_at_0.01", "precision_at_0.05", "precision_at_0.1"}
