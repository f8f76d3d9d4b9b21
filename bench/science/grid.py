"""The replay experiment: releases of unseen tasks under every replay strategy, and their summary.

Each cell of the grid is one `release_new_task` call (the product's own release loop, with
`register=False`: nothing is promoted), so each cell is an idempotent MLflow job — a rerun of the
bench reuses what finished. Cells run in `workers` spawned processes with one torch thread each
(torch is not fork-safe; two one-thread processes beat one two-thread process on 2 cores).

Phase 1 runs the no-replay release of every (task, seed) with `measure_all`: its full row is the
task's true forgetting, which the oracle replays and from which the offline mode reads its probes
(the release loop reuses a finished plain fine-tune with the same recipe instead of repeating it).
Phase 2 runs everything else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.settings import Settings


@dataclass(frozen=True)
class Cell:
    task: str
    seed: int
    strategy: str  # none | random | oracle | a completion method
    mode: str  # online | offline (none / oracle have none; random: one draw, or two when online)
    ratio: float
    temperature: float = 0.1
    source: str = "upstream"  # replay source: upstream | self | mix (docs/replay-budget.md)
    full_row: bool = True  # no replay: measure every upstream example (the oracle's true row)

    @property
    def label(self) -> str:
        if self.source != "upstream":
            return f"{self.source}" if self.source == "self" else f"{self.strategy} ({self.source})"
        if self.strategy in ("none", "oracle") or (self.strategy == "random" and self.mode == "offline"):
            return self.strategy  # one draw; "random (online)" draws again after the warm-up
        return f"{self.strategy} ({self.mode})"


def cell_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a cell, from its fields or from a result that carries them (a self / mix
    result is summarised under the source's name, so its strategy is implied by the source)."""
    source = r.get("source", "upstream")
    strategy = r["strategy"] if source == "upstream" else source
    return (r["task"], int(r["seed"]), strategy, r["mode"], round(float(r["ratio"]), 9),
            round(float(r.get("temperature", 0.1)), 9), source, bool(r.get("full_row", True)))


def plan_cells(tasks: Sequence[str], seeds: Sequence[int], ratios: Sequence[float],
               online: Sequence[str], offline: Sequence[str],
               ratio_methods: dict[float, set[str]] | None = None,
               ratio_seeds: dict[float, Sequence[int]] | None = None) -> tuple[list[Cell], list[Cell]]:
    """(phase 1, phase 2) cells. `ratio_methods[r]` / `ratio_seeds[r]`, when given, limit the
    labels / seeds run at r (the seeds of a budget must be among `seeds`: phase 1 is shared)."""
    first = [Cell(t, s, "none", "online", ratios[0]) for t in tasks for s in seeds]
    second = []
    for r in ratios:
        for t in tasks:
            for s in (ratio_seeds or {}).get(r, seeds):
                cells = [Cell(t, s, "random", "offline", r), Cell(t, s, "oracle", "online", r),
                         Cell(t, s, "random", "online", r)]
                cells += [Cell(t, s, m, "online", r) for m in online]
                cells += [Cell(t, s, m, "offline", r) for m in offline]
                allowed = (ratio_methods or {}).get(r)
                second += [c for c in cells if allowed is None or c.label in allowed]
    return first, second


def curve_cells(tasks: Sequence[str], seeds: Sequence[int], ratios: Sequence[float],
                strategies: Sequence[str]) -> list[list[Cell]]:
    """The budget curve's releases, in the batches they run in (each batch after the last).

    Every (task, seed) gets one no-replay release (at the first ratio) and one release per
    (ratio, strategy); "self" replays the parent's own samples, "mix" half samples, half MF's.
    With the oracle, the no-replay releases run first: the oracle replays their full rows. Without
    it nothing waits on another cell, so one batch runs a (ratio, seed, task) block at a time,
    no replay first: a grid stopped part-way (a long one spans sessions) holds matched
    comparisons, not some strategies complete and others absent.
    """
    full = "oracle" in strategies  # the no-replay release measures every example for it
    first = [Cell(t, s, "none", "online", ratios[0], full_row=full) for t in tasks for s in seeds]
    as_cell = {"self": ("random", "self"), "mix": ("mf", "mix")}
    second = []
    for r in ratios:
        for name in strategies:
            method, source = as_cell.get(name, (name, "upstream"))
            second += [Cell(t, s, method, "online", r, source=source) for t in tasks for s in seeds]
    if full:
        return [first, second]
    rank = {name: i for i, name in enumerate(("none", *strategies))}

    def order(c: Cell) -> tuple[int, int, int, int]:
        name = c.source if c.source != "upstream" else c.strategy
        return (list(ratios).index(c.ratio), list(seeds).index(c.seed), list(tasks).index(c.task),
                rank[name])

    return [sorted(first + second, key=order)]


def run_cell(settings: Settings, cell: Cell) -> dict[str, Any]:
    """One release (in this process): the cell's fields plus the release's result or error."""
    from service.release.request import ReleaseRequest, release_new_task

    s = settings.replace(replay_ratio=cell.ratio, temperature=cell.temperature)  # the seed: with the request; the
    # held-out set stays the line's own (it is seeded by settings.heldout_seed, not by this seed)
    req = ReleaseRequest(task=cell.task, method=cell.strategy, mode=cell.mode,  # type: ignore[arg-type]
                         name=f"science:{cell.task}:{cell.label}:r{cell.ratio:g}:T{cell.temperature:g}:s{cell.seed}",
                         register=False, promote=False, measure_all=cell.strategy == "none" and cell.full_row,
                         seed=cell.seed, replay_source=cell.source)
    try:
        out = release_new_task(s, req)
    except Exception as e:  # one failed cell must not end the experiment; it is reported
        return {**asdict(cell), "error": f"{type(e).__name__}: {e}"}
    keep = ("heldout_forgetting", "task_loss_before", "task_loss_after", "replayed", "budget",
            "replay_slots", "replay_slot_share",
            "method", "note", "job_id", "run_id", "reused", "heldout_per_source", "seconds")
    return {**asdict(cell), **{k: out.get(k) for k in keep}}


def _init_worker() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _pool_cell(settings: Settings, cell: Cell) -> dict[str, Any]:
    return run_cell(settings, cell)


def run_cells(settings: Settings, cells: Sequence[Cell], workers: int,
              on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """All cells, in `workers` spawned processes (1 = in this process); results in cell order."""
    done = on_done or (lambda _r: None)
    if workers <= 1 or len(cells) <= 1:
        out = []
        for c in cells:
            out.append(run_cell(settings, c))
            done(out[-1])
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list[dict[str, Any] | None] = [None] * len(cells)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = {pool.submit(_pool_cell, settings, c): i for i, c in enumerate(cells)}
        for f in as_completed(futures):
            i = futures[f]
            exc = f.exception()
            results[i] = ({**asdict(cells[i]), "error": f"worker died: {exc}"} if exc is not None
                          else f.result())
            done(results[i])  # type: ignore[arg-type]
    return [r for r in results if r is not None]


def _mean_std(x: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _family(rows: dict[str, dict[str, Any]], held: dict[str, dict[str, float]], control: str,
            members: list[str], key: str) -> None:
    """`members` against `control` on task means, Holm-adjusted over the members: written into
    rows[m] as vs_<key> (the Comparison), reduction_vs_<key> and wins_vs_<key> (tasks)."""
    from forgetting.stats import compare_all

    ctrl = held.get(control, {})
    cands = {m: held[m] for m in members if len(set(held[m]) & set(ctrl)) >= 2}
    if len(ctrl) < 2 or not cands:
        return
    for m, c in compare_all(cands, ctrl).items():
        rows[m][f"vs_{key}"] = c.to_dict()
        rows[m][f"reduction_vs_{key}"] = c.reduction
        rows[m][f"wins_vs_{key}"] = c.wins


def summarize(results: Sequence[dict[str, Any]], ratios: Sequence[float]) -> dict[str, Any]:
    """Per budget, by the rules of forgetting.stats: each strategy's held-out forgetting, task
    loss and replay use over its (task, seed) releases; against one-draw random replay and (the
    online methods) against the matched online random control, on task means (seeds averaged
    within a task first, n = tasks), Holm-adjusted over the strategies of each family, with a
    bootstrap CI of every reduction; the share of the oracle's reduction with its CI."""
    from forgetting.stats import compare, share_of_oracle, task_means

    ok = [r for r in results if "error" not in r and r.get("heldout_forgetting") is not None
          and math.isfinite(r["heldout_forgetting"])]
    none = {(r["task"], r["seed"]): r for r in ok if r["strategy"] == "none"}
    out: dict[str, Any] = {"failed": [r for r in results if "error" in r], "budgets": {}}
    for ratio in ratios:
        by_label: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"none": dict(none)}
        for r in ok:
            if r["strategy"] != "none" and math.isclose(r["ratio"], ratio):
                by_label.setdefault(Cell(r["task"], r["seed"], r["strategy"], r["mode"], ratio).label,
                                    {})[(r["task"], r["seed"])] = r
        held = {label: task_means({p: c["heldout_forgetting"] for p, c in cells.items()})
                for label, cells in by_label.items()}
        rows: dict[str, dict[str, Any]] = {}
        for label, cells in by_label.items():
            if not cells:
                continue
            pairs = sorted(cells)
            row: dict[str, Any] = {"n": len(pairs), "n_tasks": len(held[label])}
            row["heldout_mean"], row["heldout_std"] = _mean_std([cells[p]["heldout_forgetting"] for p in pairs])
            row["task_loss_mean"], _ = _mean_std([cells[p]["task_loss_after"] for p in pairs])
            row["budget"] = int(np.median([cells[p].get("budget") or 0 for p in pairs]))
            # distinct upstream examples actually replayed (the budget rule: never above `budget`)
            row["replayed_mean"], _ = _mean_std([cells[p].get("replayed") or 0 for p in pairs])
            rows[label] = row

        labels = [lbl for lbl in rows if lbl not in ("none", "random")]
        _family(rows, held, "random", labels, "random")
        # Online methods replay a warm-up draw and then their own plan: the online random control
        # has the same structure, so against it prediction is the only difference.
        _family(rows, held, "random (online)", [lbl for lbl in labels if lbl.endswith("(online)")
                                                and lbl != "random (online)"], "random_online")
        rand_pairs = set(by_label.get("random", {}))
        matched_none = task_means({p: c["heldout_forgetting"] for p, c in none.items() if p in rand_pairs})
        if len(matched_none) >= 2:
            # A reference row outside the Holm family, on the (task, seed) pairs random has.
            c = compare(matched_none, held["random"])
            rows["none"].update(vs_random=c.to_dict(), reduction_vs_random=c.reduction,
                                wins_vs_random=c.wins)
        if "oracle" in held and "random" in held:
            for m in labels:
                if m != "oracle" and len(set(held[m]) & set(held["random"]) & set(held["oracle"])) >= 2:
                    sh = share_of_oracle(held[m], held["random"], held["oracle"])
                    rows[m]["share_of_oracle_reduction"] = sh["share"]
                    rows[m]["share_of_oracle_ci"] = sh["ci"]
        out["budgets"][f"{ratio:g}"] = rows
    return out


def temperature_summary(sweep: Sequence[dict[str, Any]], main: Sequence[dict[str, Any]],
                        ratio: float) -> dict[str, Any]:
    """Held-out forgetting by sampling temperature, against one-draw random replay of the same
    (task, seed) pairs (uniform sampling does not depend on T; the T = 0.1 cells come from the
    main grid)."""
    def ok(r: dict[str, Any]) -> bool:
        return "error" not in r and r.get("heldout_forgetting") is not None and math.isclose(r["ratio"], ratio)

    rand = {(r["task"], r["seed"]): r["heldout_forgetting"] for r in main
            if ok(r) and r["strategy"] == "random" and r["mode"] == "offline"}
    pairs = {(r["task"], r["seed"]) for r in sweep if ok(r)}
    out: dict[str, Any] = {}
    for r in [*sweep, *[m for m in main if (m["task"], m["seed"]) in pairs]]:
        if not ok(r) or (r["task"], r["seed"]) not in rand or r["strategy"] in ("none", "random"):
            continue
        label = Cell(r["task"], r["seed"], r["strategy"], r["mode"], ratio).label
        out.setdefault(f"{r.get('temperature', 0.1):g}", {}).setdefault(label, {})[(r["task"], r["seed"])] = r["heldout_forgetting"]
    table: dict[str, Any] = {}
    for t, labels in sorted(out.items(), key=lambda kv: float(kv[0])):
        table[t] = {}
        for label, cells in labels.items():
            keys = sorted(cells)
            a = np.asarray([cells[k] for k in keys])
            b = np.asarray([rand[k] for k in keys])
            table[t][label] = {"n": len(keys), "heldout_mean": float(a.mean()),
                               "reduction_vs_random": 1.0 - float(a.sum()) / float(b.sum())}
    return table


def curve_summary(results: Sequence[dict[str, Any]], ratios: Sequence[float]) -> dict[str, Any]:
    """The budget curve by the rules of forgetting.stats: per ratio, each strategy's task-mean
    held-out forgetting and replay use; every strategy against random at that ratio (paired on
    task means, Holm-adjusted over the strategies, bootstrap CI of the reduction); MF against
    additive; the share of the oracle's reduction with its CI."""
    from forgetting.stats import compare, compare_all, share_of_oracle, task_means

    ok = [r for r in results if "error" not in r and r.get("heldout_forgetting") is not None
          and math.isfinite(r["heldout_forgetting"])]

    def values(strategy: str, ratio: float | None, key: str = "heldout_forgetting") -> dict[str, float]:
        return task_means({(r["task"], r["seed"]): float(r.get(key) or 0.0) for r in ok
                           if r["strategy"] == strategy
                           and (ratio is None or math.isclose(r["ratio"], ratio))})

    def mean(d: dict[str, float]) -> float | None:
        return float(np.mean(list(d.values()))) if d else None

    none = values("none", None)
    out: dict[str, Any] = {"failed": [r for r in results if "error" in r], "none": none,
                           "ratios": {}}
    for ratio in ratios:
        names = sorted({r["strategy"] for r in ok if r["strategy"] != "none"
                        and math.isclose(r["ratio"], ratio)})
        held = {m: values(m, ratio) for m in names}
        table: dict[str, Any] = {"none": {"n": len(none), "heldout_mean": mean(none),
                                          "task_after_mean": mean(values("none", None, "task_loss_after"))}}
        for m in names:
            table[m] = {"n": len(held[m]), "heldout_mean": mean(held[m]),
                        "distinct_mean": mean(values(m, ratio, "replayed")),
                        "budget_mean": mean(values(m, ratio, "budget")),
                        "slots_mean": mean(values(m, ratio, "replay_slots")),
                        "task_after_mean": mean(values(m, ratio, "task_loss_after"))}
        rand = held.get("random", {})
        others = {m: v for m, v in held.items() if m != "random" and len(set(v) & set(rand)) >= 2}
        if len(rand) >= 2 and others:
            for m, c in compare_all(others, rand).items():
                table[m]["vs_random"] = c.to_dict()
            if len(set(none) & set(rand)) >= 2:
                table["none"]["vs_random"] = compare(none, rand).to_dict()
            if "oracle" in held:
                for m in others:
                    if m != "oracle":
                        table[m]["share_of_oracle"] = share_of_oracle(held[m], rand, held["oracle"])
        if len(set(held.get("mf", {})) & set(held.get("additive", {}))) >= 2:
            table["mf_vs_additive"] = compare(held["mf"], held["additive"]).to_dict()
        # Self-generated replay against MF's stored replay (the question for a user who has both),
        # and against no replay (does the model's own text do anything at all?).
        for m in ("self", "mix"):
            if len(set(held.get(m, {})) & set(held.get("mf", {}))) >= 2:
                table[f"{m}_vs_mf"] = compare(held[m], held["mf"]).to_dict()
            if len(set(held.get(m, {})) & set(none)) >= 2:
                table[f"{m}_vs_none"] = compare(held[m], none).to_dict()
        out["ratios"][f"{ratio:g}"] = table
    return out
