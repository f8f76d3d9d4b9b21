"""Chains of releases on an embedded world: how much a line drifts from its base and forgets its
earlier tasks over a chain, with predicted replay, a matched random control and no replay.

    python -m bench.chain [--world default] [--length 8] [--orders 2] [--json] [--quick]

1. `ftctl init` on the world, and statistics rows from the base for `--stats-tasks` tasks (the
   matrix every MF link completes from: rows measured on an ancestor, today's policy);
2. `--length` other tasks, in `--orders` orders (the first family-round-robin, the rest seeded
   permutations of it);
3. for every strategy (MF, random, none; "mf+earlier" = MF with `--earlier-share` of each budget
   given to the chain's earlier tasks' train examples) and order, one chain (`release_chain`, each link from
   the link before it whatever its gate said, nothing promoted), chains in `--workers`
   processes; every link is an idempotent release job, so a rerun reuses what finished;
4. per chain: held-out ΔNLL vs the base after each link, and at the end every earlier task's
   test-loss increase since its release (the mean is Avalanche's BWT with the sign of a loss)
   and the final task losses; strategies compared on task means (`forgetting.stats`): each
   earlier task's final loss increase, averaged over the orders, paired between strategies.

Results: OUT/results.json (saved after every chain); `--json` prints the summary.
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

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("mf", "random", "none")


def chain_orders(tasks: list[str], orders: int, seed: int = 0) -> list[list[str]]:
    """`orders` orders of the chain's tasks: the given one, then seeded permutations."""
    rng = np.random.default_rng(seed)
    return [list(tasks)] + [[tasks[i] for i in rng.permutation(len(tasks))] for _ in range(orders - 1)]


def run_chain(settings: Any, strategy: str, order: int, tasks: list[str], base: int,
              earlier_share: float = 0.5) -> dict[str, Any]:
    """One chain in this process: its links' figures (or the error). "METHOD+earlier": METHOD
    with `earlier_share` of each budget given to the chain's earlier tasks (release.plan)."""
    from service.release.request import ReleaseRequest
    from service.release.series import release_chain

    method, _, extra = strategy.partition("+")
    if extra not in ("", "earlier"):
        raise SystemExit(f"unknown strategy {strategy!r}: METHOD or METHOD+earlier")
    # Explicit either way: a plain METHOD chain replays upstream examples only, whatever the
    # settings' default share is.
    settings = settings.replace(earlier_replay_share=earlier_share if extra else 0.0)
    template = ReleaseRequest(task="", method=method, promote=False, parent_version=base,
                              name=f"chain:{strategy}:o{order}")
    try:
        out = release_chain(settings, tasks, template, follow_failed=True)
    except Exception as e:  # one failed chain must not end the bench; it is reported
        return {"strategy": strategy, "order": order, "tasks": tasks, "error": f"{type(e).__name__}: {e}"}
    keep = ("task", "version", "parent_version", "heldout_forgetting", "heldout_vs_base",
            "task_loss_before", "task_loss_after", "replayed", "budget", "earlier_replay",
            "retention", "gate", "run_id")
    return {"strategy": strategy, "order": order, "tasks": tasks,
            "links": [{k: r.get(k) for k in keep} for r in out["releases"]]}


def _pool_chain(settings: Any, job: tuple[str, int, list[str], int, float]) -> dict[str, Any]:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    return run_chain(settings, *job)


def chain_figures(chain: dict[str, Any]) -> dict[str, Any]:
    """A finished chain's figures: drift vs base per link, and at its last link each earlier
    task's loss increase (BWT = −mean), and the final loss of every task of the chain."""
    links = chain["links"]
    last = links[-1]
    increase = {r["task"]: r["increase"] for r in last.get("retention") or []}
    final_loss = {**{r["task"]: r["loss_now"] for r in last.get("retention") or []},
                  last["task"]: last["task_loss_after"]}
    return {"drift": [x["heldout_vs_base"] for x in links], "final_drift": last["heldout_vs_base"],
            "increase": increase, "bwt": -float(np.mean(list(increase.values()))) if increase else None,
            "final_loss": final_loss, "mean_final_loss": float(np.mean(list(final_loss.values())))}


def summarize(chains: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: mean final drift vs base, BWT and final loss over the orders; each pair of
    strategies compared on every earlier task's final loss increase (task means over orders)."""
    from forgetting.stats import compare, holm

    ok = [c for c in chains if "error" not in c]
    figs = {(c["strategy"], c["order"]): chain_figures(c) for c in ok}
    out: dict[str, Any] = {"failed": [c for c in chains if "error" in c], "strategies": {}}
    per_task: dict[str, dict[str, float]] = {}
    for s in sorted({k[0] for k in figs}):
        mine = [f for (st, _), f in figs.items() if st == s]
        by_task: dict[str, list[float]] = {}
        for f in mine:
            for t, v in f["increase"].items():
                by_task.setdefault(t, []).append(v)
        per_task[s] = {t: float(np.mean(v)) for t, v in by_task.items()}
        out["strategies"][s] = {
            "chains": len(mine), "final_drift_mean": float(np.mean([f["final_drift"] for f in mine])),
            "bwt_mean": float(np.mean([f["bwt"] for f in mine if f["bwt"] is not None])),
            "final_loss_mean": float(np.mean([f["mean_final_loss"] for f in mine])),
            "drift_by_link": np.mean([f["drift"] for f in mine], axis=0).tolist()}
    pairs = [("mf", "random"), ("mf", "none"), ("random", "none"), ("mf+earlier", "mf"),
             ("mf+earlier", "none")]
    raw = {f"{a}_vs_{b}": compare(per_task[a], per_task[b]) for a, b in pairs
           if a in per_task and b in per_task and len(set(per_task[a]) & set(per_task[b])) >= 2}
    adjusted = holm({k: c.t_p for k, c in raw.items()})  # over every comparison the bench prints
    out["earlier_task_increase"] = {k: {**c.to_dict(), "p_adjusted": adjusted[k]} for k, c in raw.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="default")
    p.add_argument("--length", type=int, default=8, help="releases per chain")
    p.add_argument("--orders", type=int, default=2, help="task orders")
    p.add_argument("--stats-tasks", type=int, default=24, help="statistics rows from the base")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--ratio", type=float, default=1 / 32, help="replay ratio of every link")
    p.add_argument("--earlier-share", type=float, default=0.5,
                   help="METHOD+earlier strategies: the share of each budget for earlier tasks")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "chain")
    p.add_argument("--base-cache", type=Path, default=ROOT / ".ftctl")
    p.add_argument("--quick", action="store_true", help="tiny world, 3 links, 2 orders, 6 rows (the test)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.world, a.length, a.stats_tasks = "tiny", 3, 6
    from bench.science.__main__ import family_round_robin
    from service import environment
    from service.pipeline.line import init_line
    from service.pipeline.stats import collect_stats
    from service.settings import load_settings
    from training.world import load_world
    from training.world.pretrain import ensure_base_model

    environment.apply()
    a.out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(overrides={"workspace": a.out / "workspace", "world": a.world,
                                        "model_line": f"ftctl-chain-{a.world}", "workers": a.workers,
                                        "replay_ratio": a.ratio,
                                        "tracking_uri": os.environ.get("FTCTL_TRACKING_URI", "")})
    world = load_world(a.world)
    t0 = time.perf_counter()
    base = init_line(settings, model=Path(ensure_base_model(world, a.base_cache)))["version"]
    stats = family_round_robin(world.tasks, a.stats_tasks)
    collect_stats(settings, stats, workers=a.workers)
    rest = {k: v for k, v in world.tasks.items() if k not in stats}
    orders = chain_orders(family_round_robin(rest, a.length, seed=2), a.orders)
    jobs = [(s, o, tasks, base, a.earlier_share) for s in a.strategies.split(",")
            for o, tasks in enumerate(orders)]
    # Chains of other strategies an earlier invocation finished stay (a strategy added later).
    old = json.loads((a.out / "results.json").read_text()) if (a.out / "results.json").exists() else {}
    redo = {(j[0], j[1]) for j in jobs}
    results: dict[str, Any] = {"chains": [c for c in old.get("chains", [])
                                          if (c["strategy"], c["order"]) not in redo]}

    def save() -> None:
        results.update(meta={"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
                             f"{os.cpu_count()} cores", "world": a.world, "length": a.length,
                             "orders": orders, "stats_tasks": stats, "ratio": a.ratio,
                             "earlier_share": a.earlier_share,
                             "wall_seconds": time.perf_counter() - t0},
                       summary=summarize(results["chains"]))
        (a.out / "results.json").write_text(json.dumps(results, indent=1))

    if a.workers <= 1:
        for job in jobs:
            results["chains"].append(run_chain(settings, *job))
            save()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
            for f in as_completed([pool.submit(_pool_chain, settings, j) for j in jobs]):
                results["chains"].append(f.result())
                save()
    save()
    print(json.dumps(results["summary"] if a.json else {"out": str(a.out)}, default=str))
    return 0 if not results["summary"]["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
