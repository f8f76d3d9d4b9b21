"""Leave-tasks-out evaluation of completion methods (what `ftctl forgetting evaluate` calls).

Usage::

    from forgetting.evaluate import EvalConfig, evaluate
    rep = evaluate(Z, EvalConfig(methods=("additive", "mf"), k=30, seeds=tuple(range(10))))
    rep.results["mf"].metrics["rmse_x100"]["mean"]; rep.to_json(indent=2)

Protocol (the reference study's, with its leaks fixed): split the rows into known and test
tasks; fit each method once on the known rows; for every seed and test task, measure k probes
(distinct, never from `exclude`, never unmeasured entries), fold the task in, and score only the
entries it did not see (RMSE×100; Spearman per row; AUC and the study's F1 of "above the row's
median"; precision@1/5/10% of the truly most-forgotten). Metrics are pooled over the test tasks of one seed, then reported as
mean ± std over seeds. Splits:
- "random": a `test_fraction` of rows drawn with `split_seed`;
- "family": leave one family out (`families[i]` labels row i) — the out-of-distribution test;
- "loo": leave one task out (M fits per method; the prototype's protocol for small M).
Within a seed, test tasks with fully measured rows get the same probes (as in the reference).
Probes are drawn once per (fold, seed, test task) and shared by every method, so methods are
compared on identical measurements; "leverage" scores are computed once per fold (one SVD of the
known rows, seeded with the first seed) instead of once per seed x task x method. The report
records every probe set (`EvalReport.probe_sets`, indexed by `probes[seed][task]`), so a caller
can check that none lies in `exclude`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forgetting.completion import make_completer
from forgetting.completion.base import as_matrix
from forgetting.errors import ForgettingError
from forgetting.metrics import classification, precision_at, rmse_x100, spearman_rows
from forgetting.probes import choose_probes, leverage_scores


@dataclass
class EvalConfig:
    methods: tuple[str, ...] = ("additive", "knn", "knn_pearson", "mf")
    k: int = 30
    seeds: tuple[int, ...] = tuple(range(10))
    split: str = "random"  # "random" | "family" | "loo"
    test_fraction: float = 0.2
    split_seed: int = 0
    probe_strategy: str = "random"  # "random" | "leverage"
    precision_fracs: tuple[float, ...] = (0.01, 0.05, 0.1)
    method_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MethodResult:
    method: str
    metrics: dict[str, dict[str, Any]]  # name -> {"mean", "std", "per_seed"}
    fit_seconds: float
    fold_in_ms: float  # mean wall time of one fold-in


@dataclass
class EvalReport:
    config: dict[str, Any]
    n_rows: int
    n_columns: int
    folds: list[list[int]]  # test rows of each fold
    results: dict[str, MethodResult]
    # Probe columns of every (seed, test task), deduplicated: probes[seed][task] indexes
    # probe_sets. Fully measured tasks of one seed share one set, so this stays small.
    probe_sets: list[list[int]] = field(default_factory=list)
    probes: dict[int, dict[int, int]] = field(default_factory=dict)

    def probe_columns(self, seed: int, task: int) -> list[int]:
        """The probe columns test task `task` was given under seed `seed`."""
        return self.probe_sets[self.probes[seed][task]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)


def make_folds(
    m: int, cfg: EvalConfig, families: Sequence[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(known rows, test rows) pairs for the configured split."""
    if m < 2:
        raise ForgettingError(f"evaluation needs at least 2 rows (known + test), got {m}.")
    rows = np.arange(m)
    if cfg.split == "random":
        if not 0 < cfg.test_fraction < 1:
            raise ForgettingError(f"test_fraction must be in (0, 1), got {cfg.test_fraction}.")
        n_test = min(max(1, round(cfg.test_fraction * m)), m - 1)
        perm = np.random.default_rng(cfg.split_seed).permutation(m)
        test = np.sort(perm[:n_test])
        return [(np.setdiff1d(rows, test), test)]
    if cfg.split == "loo":
        return [(np.delete(rows, i), np.array([i])) for i in rows]
    if cfg.split == "family":
        if families is None or len(families) != m:
            raise ForgettingError(
                "split 'family' needs families=[label of each row] (one per row)."
            )
        labels = np.asarray(families)
        uniq = list(dict.fromkeys(labels.tolist()))
        if len(uniq) < 2:
            raise ForgettingError("split 'family' needs at least two families; use split='random'.")
        return [(np.flatnonzero(labels != f), np.flatnonzero(labels == f)) for f in uniq]
    raise ForgettingError(f"unknown split {cfg.split!r}; use 'random', 'family' or 'loo'.")


def _summary(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(np.nanmean(arr)) if arr.size else float("nan"),
        "std": float(np.nanstd(arr)) if arr.size else float("nan"),
        "per_seed": [float(v) for v in arr],
    }


def _draw_probes(
    zm: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    cfg: EvalConfig,
    exclude: np.ndarray,
) -> list[dict[int, dict[int, np.ndarray]]]:
    """Probe columns per fold, seed and test task (shared by every method)."""
    n = zm.shape[1]
    out: list[dict[int, dict[int, np.ndarray]]] = []
    for known, test in folds:
        lev = None
        if cfg.probe_strategy == "leverage":  # one SVD per fold: it depends on the known rows only
            lev = leverage_scores(zm[known], seed=cfg.seeds[0] if cfg.seeds else 0)
        per_seed: dict[int, dict[int, np.ndarray]] = {}
        for seed in cfg.seeds:
            shared: np.ndarray | None = None
            per_seed[seed] = {}
            for i in test:
                row = zm[i]
                full = bool(np.isfinite(row).all())
                if full and shared is not None:
                    cols = shared
                else:
                    cols = choose_probes(
                        n,
                        cfg.k,
                        seed=seed,
                        exclude=exclude | ~np.isfinite(row),
                        strategy=cfg.probe_strategy,
                        leverage=lev,
                    )
                    if full:
                        shared = cols
                per_seed[seed][int(i)] = cols
        out.append(per_seed)
    return out


def evaluate(
    z: Any,
    config: EvalConfig | None = None,
    *,
    families: Sequence[str] | None = None,
    exclude: np.ndarray | None = None,
    example_embeddings: np.ndarray | None = None,
    task_embeddings: np.ndarray | None = None,
) -> EvalReport:
    """Run the leave-tasks-out protocol for every configured method (see module docstring)."""
    cfg = config or EvalConfig()
    zm = as_matrix(z)
    m, n = zm.shape
    if cfg.k < 1:
        raise ForgettingError(f"k must be >= 1 probe, got {cfg.k}.")
    folds = make_folds(m, cfg, families)
    ex = np.zeros(n, bool) if exclude is None else np.asarray(exclude, dtype=bool)
    if ex.shape != (n,):
        raise ForgettingError(f"exclude mask has shape {ex.shape}, expected ({n},).")
    drawn = _draw_probes(zm, folds, cfg, ex)
    results: dict[str, MethodResult] = {}
    for name in cfg.methods:
        kwargs = dict(cfg.method_kwargs.get(name, {}))
        if name.startswith("semantic") and example_embeddings is not None:
            kwargs.setdefault("example_embeddings", example_embeddings)
        per_seed: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {s: [] for s in cfg.seeds}
        fit_s, fold_s, n_fold = 0.0, 0.0, 0
        for (known, test), fold_probes in zip(folds, drawn, strict=True):
            t0 = time.perf_counter()
            comp = make_completer(name, **kwargs).fit(zm[known])
            fit_s += time.perf_counter() - t0
            for seed in cfg.seeds:
                for i in test:
                    row = zm[i]
                    cols = fold_probes[seed][int(i)]
                    emb = None if task_embeddings is None else task_embeddings[i]
                    t0 = time.perf_counter()
                    pred = comp.fold_in(cols, row[cols], task_embedding=emb)
                    fold_s += time.perf_counter() - t0
                    n_fold += 1
                    per_seed[seed].append((int(i), cols, pred))
        metrics: dict[str, list[float]] = {}
        for seed in cfg.seeds:
            rows = [r for r, _, _ in per_seed[seed]]
            true = zm[rows]
            pred = np.stack([p for _, _, p in per_seed[seed]])
            score = np.isfinite(true)
            for j, (_, cols, _) in enumerate(per_seed[seed]):
                score[j, cols] = False
            vals = {"rmse_x100": rmse_x100(true, pred, score)}
            # "Forgotten" = above the row's median, on both sides: equal counts, so precision =
            # recall = F1 by construction — one column, the study's F1, beside the AUC. The
            # study's F1 of Z > 0 is not kept: with ~all entries positive it is ~1 for any score.
            b = classification(true, pred, score, label="median")
            vals.update({"f1_median": b.f1, "roc_auc_median": b.roc_auc})
            for frac in cfg.precision_fracs:
                vals[f"precision_at_{frac:g}"] = precision_at(true, pred, score, frac)
            vals["spearman"] = spearman_rows(true, pred, score)
            for k, v in vals.items():
                metrics.setdefault(k, []).append(v)
        results[name] = MethodResult(
            method=name,
            metrics={k: _summary(v) for k, v in metrics.items()},
            fit_seconds=fit_s,
            fold_in_ms=1000.0 * fold_s / max(n_fold, 1),
        )
    sets: dict[tuple[int, ...], int] = {}
    index: dict[int, dict[int, int]] = {int(s): {} for s in cfg.seeds}
    for fold_probes in drawn:
        for seed, tasks in fold_probes.items():
            for i, cols in tasks.items():
                index[int(seed)][i] = sets.setdefault(tuple(int(c) for c in cols), len(sets))
    return EvalReport(
        config=asdict(cfg),
        n_rows=m,
        n_columns=n,
        folds=[[int(i) for i in test] for _, test in folds],
        results=results,
        probe_sets=[list(c) for c in sets],
        probes=index,
    )


def evaluate_splits(z: Any, config: EvalConfig, split_seeds: Sequence[int], *,
                    control: str = "additive", **kw: Any) -> dict[str, Any]:
    """The random split repeated with several `split_seeds` (different test tasks each time):
    per method and metric, the mean over probe seeds within a split, then mean ± std over the
    splits; and each method against `control` paired by split (t-test over the split means),
    so that two methods are told apart only when the test tasks do not decide it.

    Returns {"splits": [...], "results": {method: {metric: {mean, std, per_split}}},
    "vs_control": {method: {metric: {mean_diff, t_p, wins}}}, "reports": [EvalReport dicts]}.
    """
    from dataclasses import replace

    from scipy import stats

    if config.split != "random" or len(split_seeds) < 2:
        raise ForgettingError("evaluate_splits repeats the random split: pass split='random' "
                              "and at least 2 split seeds.")
    reports = [evaluate(z, replace(config, split_seed=int(s)), **kw) for s in split_seeds]
    results: dict[str, dict[str, Any]] = {}
    for name in config.methods:
        per = {metric: [r.results[name].metrics[metric]["mean"] for r in reports]
               for metric in reports[0].results[name].metrics}
        results[name] = {metric: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)),
                                  "per_split": [float(x) for x in v]} for metric, v in per.items()}
    vs: dict[str, dict[str, Any]] = {}
    if control in results:
        for name in config.methods:
            if name == control:
                continue
            vs[name] = {}
            for metric, v in results[name].items():
                a = np.asarray(v["per_split"])
                b = np.asarray(results[control][metric]["per_split"])
                d = a - b
                ok = np.isfinite(d)
                p = (float(stats.ttest_rel(a[ok], b[ok]).pvalue)
                     if ok.sum() >= 2 and np.any(d[ok] != 0) else 1.0)
                vs[name][metric] = {"mean_diff": float(np.nanmean(d)), "t_p": p,
                                    "n_splits": int(ok.sum())}
    return {"splits": [int(s) for s in split_seeds], "control": control, "results": results,
            "vs_control": vs, "reports": [r.to_dict() for r in reports]}
