"""Do rows measured on one version still predict forgetting on a later one?

A model line's matrix is built from rows measured on some version; after a promotion the
@champion is a fine-tune of it, and a new task's forgetting is measured on the champion. This
module scores predictions of target rows (measured on the newer version) from a given set of
known rows (measured on any versions), with the evaluation protocol's probes and metrics
(`forgetting.evaluate`): for each target row, fit on the known rows minus that task's own row,
fold in k probes of the target, score the entries it did not see.

Usage::

    from forgetting.staleness import score_targets, refresh_versions
    scores = score_targets(known, targets, leave_out=[known_index_of_task_i or None, ...])
    scores.mean("spearman")          # per target, averaged over probe seeds
    refresh_versions(tasks, per_promotion=2, depth=3)  # which version each task's row is from
    stalest_first({"a": 2, "b": 0})  # the order rows are refreshed in: ["a", "b"]

`refresh_versions` is the refresh policy (`stats_refresh_per_promotion`): after each promotion
the m rows measured longest ago are measured again on the new champion, cheapest first among
equals — after d promotions a task's row is from the latest version that refreshed it.
Pure numpy; `bench/matrix_policy.py` runs it on a real chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from forgetting.completion import make_completer
from forgetting.errors import ForgettingError
from forgetting.metrics import precision_at, rmse_x100, spearman_rows
from forgetting.probes import choose_probes

METRICS = ("spearman", "precision_at_0.1", "rmse_x100", "probe_rmse_x100", "flagged")


@dataclass(frozen=True)
class ProbeCheck:
    """Cross-validated error on a release's own probes (RMSE x100): the completion model's, and
    the additive model's fitted on the same rows (example effects only, no task-specific
    structure). `stale`: the rows predict the held-back probes no better than example means —
    rows measured on versions too far back, or a task unlike every row; either way, measure
    rows on the current champion (`ftctl stats collect`)."""

    rmse_x100: float
    baseline_rmse_x100: float

    @property
    def stale(self) -> bool:
        return self.rmse_x100 >= self.baseline_rmse_x100


def probe_check(model: object, baseline: object, cols: np.ndarray, values: np.ndarray,
                folds: int = 3, seed: int = 0) -> ProbeCheck:
    """Fold in all probes but one fold, predict that fold; both models on the same splits."""
    cols, values = np.asarray(cols), np.asarray(values, dtype=np.float64)
    if cols.size < 2 * folds:
        raise ForgettingError(f"a probe check needs >= {2 * folds} probes, got {cols.size}")
    parts = np.array_split(np.random.default_rng(seed).permutation(cols.size), folds)
    err = {"m": [], "b": []}
    for part in parts:
        keep = np.setdiff1d(np.arange(cols.size), part)
        for key, comp in (("m", model), ("b", baseline)):
            pred = np.asarray(comp.fold_in(cols[keep], values[keep]), dtype=np.float64)  # type: ignore[attr-defined]
            err[key].append((pred[cols[part]] - values[part]) ** 2)
    return ProbeCheck(100 * float(np.sqrt(np.mean(np.concatenate(err["m"])))),
                      100 * float(np.sqrt(np.mean(np.concatenate(err["b"])))))


@dataclass
class TargetScores:
    """Per target row: each metric averaged over the probe seeds."""

    values: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> (targets,)

    def mean(self, metric: str) -> float:
        return float(np.nanmean(self.values[metric]))


def score_targets(known: np.ndarray, targets: np.ndarray, *, method: str = "mf", k: int = 30,
                  seeds: Sequence[int] = (0, 1, 2), leave_out: Sequence[int | None] | None = None,
                  **method_kwargs: object) -> TargetScores:
    """Predict every target row from `known` (rows x N) and k of its own entries.

    leave_out[i]: the index of target i's own task among the known rows (dropped before the
    fit: a new task has no row of its own), or None. Probes are drawn per (seed, target) and are
    the same whatever `known` is, so two sets of known rows are compared on identical probes.
    Metrics: Spearman and precision@10% on the unseen entries (higher = better), RMSE x100 on
    them and on the probes themselves, and `flagged`: the share of probe draws whose
    `probe_check` says stale (what a release can see without the truth).
    """
    known = np.asarray(known, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if known.ndim != 2 or targets.ndim != 2 or known.shape[1] != targets.shape[1]:
        raise ForgettingError(f"known {known.shape} and targets {targets.shape} need the same "
                              "columns (one upstream set)")
    skip = list(leave_out) if leave_out is not None else [None] * len(targets)
    if len(skip) != len(targets):
        raise ForgettingError(f"leave_out has {len(skip)} entries for {len(targets)} targets")
    n = known.shape[1]
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    fits: dict[int | None, tuple[object, object]] = {}
    for i, row in enumerate(targets):
        if skip[i] not in fits:  # targets of one task share a fit
            rows = known if skip[i] is None else np.delete(known, skip[i], axis=0)
            fits[skip[i]] = (make_completer(method, **method_kwargs).fit(rows),
                             make_completer("additive").fit(rows))
        comp, additive = fits[skip[i]]
        per: dict[str, list[float]] = {m: [] for m in METRICS}
        for seed in seeds:
            cols = choose_probes(n, k, seed=seed + 7919 * i, exclude=~np.isfinite(row))
            pred = np.asarray(comp.fold_in(cols, row[cols]), dtype=np.float64)  # type: ignore[attr-defined]
            unseen = np.isfinite(row)
            unseen[cols] = False
            t, p, s = row[None], pred[None], unseen[None]
            per["spearman"].append(spearman_rows(t, p, s))
            per["precision_at_0.1"].append(precision_at(t, p, s, 0.1))
            per["rmse_x100"].append(rmse_x100(t, p, s))
            on_probes = np.zeros_like(unseen)
            on_probes[cols] = True
            per["probe_rmse_x100"].append(rmse_x100(t, p, on_probes[None]))
            per["flagged"].append(float("nan") if method == "additive"  # no baseline of its own
                                  else float(probe_check(comp, additive, cols, row[cols], seed=seed).stale))
        for m in METRICS:
            out[m].append(float(np.nanmean(per[m])))
    return TargetScores({m: np.asarray(v) for m, v in out.items()})


def stalest_first(age: Mapping[str, int], cost: Mapping[str, float] | None = None) -> list[str]:
    """Tasks in the order the refresh policy measures them again: the row measured most
    promotions ago first, the cheapest among equals (`cost`, e.g. the seconds its last statistics
    job took), then the given order."""
    rank = {t: i for i, t in enumerate(age)}
    return sorted(age, key=lambda t: (-age[t], (cost or {}).get(t, 0.0), rank[t]))


def refresh_versions(tasks: Sequence[str], per_promotion: int, depth: int,
                     cost: Mapping[str, float] | None = None) -> dict[str, int]:
    """The version depth (0 = the ancestor the matrix was measured on) each task's row comes
    from after `depth` promotions, refreshing `per_promotion` rows per promotion in
    `stalest_first` order — what the scheduler does (service/dist/beat.py)."""
    if per_promotion < 0 or depth < 0:
        raise ForgettingError("per_promotion and depth must be >= 0")
    at = {t: 0 for t in tasks}
    for d in range(1, depth + 1):
        for t in stalest_first({t: d - at[t] for t in tasks}, cost)[:per_promotion]:
            at[t] = d
    return at
