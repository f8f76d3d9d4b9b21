"""How ftctl compares strategies: the task is the unit, effects come with intervals, several
comparisons are corrected, and low rank is judged against a null of the same shape.

Usage::

    per_task = task_means({("fra", 0): 0.12, ("fra", 1): 0.10, ("deu", 0): 0.30})  # {"fra": 0.11, ...}
    cmp = compare(method, control)            # dicts task -> value; lower is better
    cmp.reduction, cmp.ci, cmp.t_p            # 1 - Σa/Σb, its 95% bootstrap CI over tasks, t-test
    cmp.difference, cmp.difference_ci         # mean(a - b) in the values' unit, its bootstrap CI
    holm({"mf": 0.01, "additive": 0.04})      # Holm-Bonferroni adjusted p-values
    share_of_oracle(mf, random, oracle)       # ratio of reductions, with its bootstrap CI
    null = permutation_null_r2(z, ranks=(1, 3, 5), draws=20)   # R² of column-permuted copies

The rules (../shared/notes/statistics.md in the project): seeds of one task are averaged first
(n = tasks); paired t-test and Wilcoxon signed-rank on task means; Holm across the strategies of
one table; relative reductions and ratios with a percentile bootstrap over tasks (resampled with
replacement, 10,000 draws); a relative reduction only where the control forgets on net (Σ control
> 0: of a gain, "1 - Σa/Σb" reads backwards), the difference in nats always; R² beside the mean
R² of matrices whose columns were each permuted across rows independently (what is left when rows
share no structure beyond the column margins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from forgetting.errors import ForgettingError

BOOTSTRAP_DRAWS = 10_000
LEVEL = 0.95


def task_means(values: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """{(task, seed): value} -> {task: mean over its seeds}: one number per task."""
    by_task: dict[str, list[float]] = {}
    for (task, _seed), v in values.items():
        by_task.setdefault(task, []).append(float(v))
    return {t: float(np.mean(v)) for t, v in sorted(by_task.items())}


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, *, draws: int = BOOTSTRAP_DRAWS,
                 level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `stat(indices)` over `draws` resamples of range(n) with
    replacement (the tasks). NaN draws (a ratio with a zero denominator) are left out."""
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(draws, n))
    vals = np.array([stat(i) for i in idx], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Comparison:
    """A strategy against a control over the same tasks (lower values = better)."""

    n: int  # tasks
    mean: float  # mean of the strategy's task values
    control_mean: float
    reduction: float  # 1 - Σ strategy / Σ control (> 0: the strategy forgets less); NaN if Σ control <= 0
    ci: tuple[float, float]  # 95% bootstrap interval of `reduction` over tasks
    wins: int  # tasks where the strategy is below the control
    t_p: float  # paired t-test on task values, two-sided
    wilcoxon_p: float
    p_adjusted: float | None = None  # Holm over the table it was printed in
    # mean(strategy - control) over the tasks (< 0: the strategy is lower), with its bootstrap CI:
    # defined whatever the control's sign, so it is the effect to read when the control does not
    # forget on net (e.g. a fine-tune that lowers the upstream loss: reduction is NaN there).
    difference: float = float("nan")
    difference_ci: tuple[float, float] = (float("nan"), float("nan"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        d["difference_ci"] = list(self.difference_ci)
        return d


def _reduction(a: np.ndarray, b: np.ndarray) -> float:
    """1 - Σa/Σb: the share of the control's forgetting the strategy avoids. Only a share of a
    positive total means that; when the control gains on net (Σb <= 0) it is NaN, not a sign flip
    that would call a smaller gain "less forgetting"."""
    denom = float(b.sum())
    return 1.0 - float(a.sum()) / denom if denom > 0 else float("nan")


def compare(strategy: Mapping[str, float], control: Mapping[str, float], *,
            seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Comparison:
    """Paired comparison on the tasks both have (task -> value, e.g. from `task_means`)."""
    tasks = sorted(set(strategy) & set(control))
    if len(tasks) < 2:
        raise ForgettingError(f"a comparison needs >= 2 tasks in common, got {len(tasks)}.")
    a = np.array([strategy[t] for t in tasks], dtype=np.float64)
    b = np.array([control[t] for t in tasks], dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ForgettingError("a comparison needs finite values for every task.")
    d = a - b
    if np.all(d == 0):
        t_p = w_p = 1.0
    else:
        t_p = float(stats.ttest_rel(a, b).pvalue)
        w_p = float(stats.wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    ci = bootstrap_ci(lambda i: _reduction(a[i], b[i]), len(tasks), seed=seed, draws=draws)
    d_ci = bootstrap_ci(lambda i: float(d[i].mean()), len(tasks), seed=seed, draws=draws)
    return Comparison(n=len(tasks), mean=float(a.mean()), control_mean=float(b.mean()),
                      reduction=_reduction(a, b), ci=ci, wins=int(np.sum(d < 0)), t_p=t_p,
                      wilcoxon_p=w_p, difference=float(d.mean()), difference_ci=d_ci)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m = len(names)
    out: dict[str, float] = {}
    running = 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * float(pvalues[name])))
        out[name] = running
    return out


def compare_all(strategies: Mapping[str, Mapping[str, float]], control: Mapping[str, float],
                **kw: Any) -> dict[str, Comparison]:
    """Every strategy against one control, Holm-adjusted over the strategies compared."""
    raw = {name: compare(vals, control, **kw) for name, vals in strategies.items()}
    adjusted = holm({name: c.t_p for name, c in raw.items()})
    return {name: Comparison(**{**asdict(c), "ci": c.ci, "difference_ci": c.difference_ci,
                                "p_adjusted": adjusted[name]})
            for name, c in raw.items()}


def share_of_oracle(strategy: Mapping[str, float], control: Mapping[str, float],
                    oracle: Mapping[str, float], *, seed: int = 0,
                    draws: int = BOOTSTRAP_DRAWS) -> dict[str, Any]:
    """Σ(control - strategy) / Σ(control - oracle) over the tasks all three have: the share of
    the oracle's reduction the strategy achieves, with its bootstrap interval over tasks."""
    tasks = sorted(set(strategy) & set(control) & set(oracle))
    a, b, o = (np.array([d[t] for t in tasks], dtype=np.float64) for d in (strategy, control, oracle))

    def ratio(i: np.ndarray) -> float:
        best = float((b[i] - o[i]).sum())
        return float((b[i] - a[i]).sum()) / best if best > 0 else float("nan")

    return {"n": len(tasks), "share": ratio(np.arange(len(tasks))) if tasks else float("nan"),
            "ci": list(bootstrap_ci(ratio, len(tasks), seed=seed, draws=draws))}


def permutation_null_r2(z: np.ndarray, ranks: Iterable[int], *, draws: int = 20,
                        seed: int = 0, max_columns: int | None = 10_000) -> dict[int, dict[str, float]]:
    """R² by rank of `z` (fully observed columns) beside the null: each column permuted across
    rows independently, the same ranks fitted. {rank: {r2, null_mean, null_std, excess}}.
    Columns beyond `max_columns` are subsampled as forgetting.lowrank does (same seed, same
    columns), so `r2` equals its `svd_r2`."""
    x = np.asarray(z, dtype=np.float32)
    cols = np.flatnonzero(~np.isnan(x).any(axis=0))
    if max_columns is not None and cols.size > max_columns:
        cols = np.sort(np.random.default_rng(seed).choice(cols, max_columns, replace=False))
    x = x[:, cols].astype(np.float64)
    if x.shape[0] < 2 or x.shape[1] < 2:
        raise ForgettingError(f"R² with a null needs >= 2 rows and columns, got {x.shape}.")
    ranks = sorted({int(r) for r in ranks if int(r) >= 1})
    rng = np.random.default_rng(seed)

    def r2s(m: np.ndarray) -> np.ndarray:
        # The fit of forgetting.lowrank: a truncated SVD of the uncentred matrix, whose error is
        # the energy of the dropped singular values; SST around the global mean.
        s = np.linalg.svd(m, compute_uv=False)
        sst = float(((m - m.mean()) ** 2).sum())
        total = float((m**2).sum())
        return np.array([1.0 - (total - float((s[:min(r, s.size)] ** 2).sum())) / sst for r in ranks])

    real = r2s(x)
    null = np.stack([r2s(np.take_along_axis(x, rng.random(x.shape).argsort(axis=0), axis=0))
                     for _ in range(draws)])
    return {r: {"r2": float(real[i]), "null_mean": float(null[:, i].mean()),
                "null_std": float(null[:, i].std(ddof=1)) if draws > 1 else 0.0,
                "excess": float(real[i] - null[:, i].mean())} for i, r in enumerate(ranks)}


def summarize_values(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n": int(a.size)}
