"""Which rows should the matrix use after a promotion? Rows measured on the ancestor, fresh rows
measured on the new champion, or the ancestor's rows with a few refreshed per promotion.

    python -m bench.matrix_policy [--chain-out bench/out/chain] [--depth 5] [--tasks 24] [--json]

Runs on the workspace `python -m bench.chain` left (run that first): its statistics rows
measured on the base, and the first `--depth` links of its MF chain (order 0) — versions
v+1 … v+depth, each a fine-tune of the one before, as a line's successive champions are.

1. statistics rows of the same `--tasks` tasks measured again on every link's version
   (`collect_stats(parent_version=…)`; idempotent jobs, so a rerun reuses them);
2. for every depth d and task t, t's row on version d is the truth; it is predicted from k = 30
   of its own entries (3 probe draws, the same probes for every policy) and the known rows of
   each policy, t's own row always left out (a new task has none):
   - ancestor: the same tasks' rows measured on the base;
   - fresh: rows of the same tasks measured on version d (what re-collecting every row costs);
   - refresh-m: the base's rows with m rows per promotion measured again on the new champion,
     oldest first (`forgetting.staleness.refresh_versions`), m ∈ {1, 2, 4};
   - additive on the ancestor rows (no task-specific prediction).
   Scored on the entries not probed: Spearman, precision@10%, RMSE×100, and the probes' own fit
   error (what a release can see without the truth);
3. per depth, each policy against fresh on task means (paired t-test, Holm over the policies of
   a depth, bootstrap 95% CI of the mean difference over tasks), how far rows moved (Spearman
   between a task's base row and its row on version d), and the cost in statistics jobs.

Results: OUT/matrix_policy.json (default: the chain's out folder); `--json` prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
REFRESH = (1, 2, 4)
METRICS = ("spearman", "precision_at_0.1", "rmse_x100", "probe_rmse_x100", "flagged")


def rows_by_version(settings: Any, versions: list[int], tasks: list[str]) -> dict[int, dict[str, np.ndarray]]:
    """{version: {task: ΔNLL row}} of the FINISHED statistics rows measured on each version."""
    from service.pipeline.inputs import load_upstream
    from service.tracking.matrix import choose_rows
    from service.tracking.store import TAG, Tracker

    tracker, upstream = Tracker(settings), load_upstream(settings)
    out: dict[int, dict[str, np.ndarray]] = {}
    for v in versions:
        got = choose_rows(tracker, upstream, base_version=v)
        out[v] = {}
        for run in got.runs:
            task = run.data.tags.get(TAG + "task")
            if task in tasks and run.data.tags.get(TAG + "base_version") == str(v):  # on v itself
                df = tracker.load_row(run.info.run_id)
                assert list(df["example_id"]) == list(upstream.ids), "rows of one upstream set"
                out[v][task] = df["delta"].to_numpy(dtype=np.float64)
    return out


def _diff(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired a − b over tasks: mean, bootstrap 95% CI, t-test p, wins (a > b)."""
    from scipy import stats

    from forgetting.stats import bootstrap_ci

    d = a - b
    p = 1.0 if np.allclose(d, 0) else float(stats.ttest_rel(a, b).pvalue)
    return {"n": int(d.size), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": float(d.mean()), "ci": list(bootstrap_ci(lambda i: float(d[i].mean()), d.size)),
            "p": p, "a_higher": int(np.sum(d > 0))}


def evaluate_policies(rows: dict[int, dict[str, np.ndarray]], base: int, chain: list[int],
                      tasks: list[str], base_tasks: list[str], k: int = 30,
                      seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """Every policy's scores per depth (see the module docstring); pure given the rows."""
    from forgetting.staleness import refresh_versions, score_targets
    from forgetting.stats import holm

    # The same tasks for every policy: the comparison is of where the rows were measured, not
    # of how many there are (`base_tasks` only orders them).
    anc_tasks = [t for t in base_tasks if t in rows[base] and t in tasks]
    known_anc = np.stack([rows[base][t] for t in anc_tasks])
    out: dict[str, Any] = {"depths": []}
    for d, v in enumerate(chain, start=1):
        have = [t for t in tasks if t in rows[v] and t in rows[base]]
        if len(have) < 4:
            continue
        targets = np.stack([rows[v][t] for t in have])
        policies: dict[str, Any] = {
            "ancestor": score_targets(known_anc, targets, k=k, seeds=seeds,
                                      leave_out=[anc_tasks.index(t) for t in have]),
            "fresh": score_targets(targets, targets, k=k, seeds=seeds, leave_out=list(range(len(have)))),
            "additive (ancestor)": score_targets(known_anc, targets, method="additive", k=k, seeds=seeds,
                                                 leave_out=[anc_tasks.index(t) for t in have]),
        }
        for m in REFRESH:
            at = refresh_versions(have, m, d)
            versions = [base, *chain[:d]]
            known = np.stack([rows[versions[at[t]]][t] for t in have])
            policies[f"refresh-{m}"] = score_targets(known, targets, k=k, seeds=seeds,
                                                     leave_out=list(range(len(have))))
        drift = [float(np.corrcoef(np.argsort(np.argsort(rows[base][t])),
                                   np.argsort(np.argsort(rows[v][t])))[0, 1]) for t in have]
        vs_fresh = {name: {m: _diff(s.values[m], policies["fresh"].values[m]) for m in METRICS}
                    for name, s in policies.items() if name != "fresh"}
        adj = holm({name: c["spearman"]["p"] for name, c in vs_fresh.items()})
        for name in vs_fresh:
            vs_fresh[name]["spearman"]["p_holm"] = adj[name]
        out["depths"].append({
            "depth": d, "version": v, "tasks": have,
            "means": {name: {m: s.mean(m) for m in METRICS} for name, s in policies.items()},
            "vs_fresh": vs_fresh,
            "row_rank_correlation_with_base": {"mean": float(np.mean(drift)), "min": float(np.min(drift))},
            "mean_delta": {"base": float(np.mean([rows[base][t].mean() for t in have])),
                           "this_version": float(targets.mean())}})
    out["cost_stats_jobs_per_promotion"] = {"fresh": len(tasks), **{f"refresh-{m}": m for m in REFRESH},
                                            "ancestor": 0}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.matrix_policy", description=__doc__.split("\n\n")[0])
    p.add_argument("--chain-out", type=Path, default=ROOT / "bench" / "out" / "chain",
                   help="the out folder of `python -m bench.chain` (its workspace and results.json)")
    p.add_argument("--strategy", default="mf", help="whose chain's versions are the champions")
    p.add_argument("--depth", type=int, default=5, help="links of the chain measured again")
    p.add_argument("--tasks", type=int, default=24, help="statistics tasks measured on every version")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="the chain's --quick workspace: 3 links, 6 tasks")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.depth, a.tasks = min(a.depth, 3), min(a.tasks, 6)
    res_path = a.chain_out / "results.json"
    if not res_path.exists():
        raise SystemExit(f"{res_path} not found: run `python -m bench.chain` first (its workspace "
                         "holds the base's rows and the chain's versions)")
    chain_res = json.loads(res_path.read_text())
    meta = chain_res["meta"]
    chains = [c for c in chain_res["chains"] if c["strategy"] == a.strategy and "error" not in c]
    if not chains:
        raise SystemExit(f"no finished {a.strategy} chain in {res_path}")
    first = min(chains, key=lambda c: c["order"])
    links = first["links"][: a.depth]
    base, chain = int(links[0]["parent_version"]), [int(x["version"]) for x in links]

    from service import environment
    from service.pipeline.stats import collect_stats
    from service.settings import load_settings

    environment.apply()
    settings = load_settings(overrides={
        "workspace": a.chain_out / "workspace", "world": meta["world"],
        "model_line": f"ftctl-chain-{meta['world']}", "workers": a.workers,
        "tracking_uri": os.environ.get("FTCTL_TRACKING_URI", "")})
    tasks = list(meta["stats_tasks"][: a.tasks])
    t0 = time.perf_counter()
    for v in chain:
        print(f"[{time.strftime('%H:%M:%S')}] statistics rows of {len(tasks)} tasks on version {v}",
              file=sys.stderr, flush=True)
        failed = [r for r in collect_stats(settings, tasks, workers=a.workers, parent_version=v)
                  if "error" in r]
        if failed:
            raise SystemExit(f"statistics jobs failed on version {v}: {failed}")
    rows = rows_by_version(settings, [base, *chain], list(meta["stats_tasks"]))
    out = evaluate_policies(rows, base, chain, tasks, list(meta["stats_tasks"]))
    out["meta"] = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
                   f"{os.cpu_count()} cores", "world": meta["world"], "chain_strategy": a.strategy,
                   "chain_order": first["order"], "chain_tasks": [x["task"] for x in links],
                   "base_version": base, "versions": chain, "tasks": tasks, "k": 30,
                   "probe_seeds": 3, "wall_seconds": time.perf_counter() - t0}
    write_text(a.chain_out / "matrix_policy.json", json.dumps(out, indent=1))
    summary = [{"depth": d["depth"], **{n: round(m["spearman"], 3) for n, m in d["means"].items()},
                "row_rank_corr_with_base": round(d["row_rank_correlation_with_base"]["mean"], 3)}
               for d in out["depths"]]
    print(json.dumps(summary if a.json else {"out": str(a.chain_out / "matrix_policy.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
