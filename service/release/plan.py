"""The parts of a release's replay plan, and the plan artifact (docs/replay-budget.md).

A plan holds at most `budget` distinct examples, from up to three sources:

    the parent's own samples   `self_budget` (--replay-source self|mix)
    earlier tasks' examples    `earlier_budget` = round(earlier_replay_share x budget): train
                               examples of the tasks the chain's earlier releases learned
    stored upstream examples   the rest (`upstream_budget`), chosen by the release's method

Earlier-task replay is the chain's own protection against forgetting what it learned (issue
"Continual means a chain"): every release logs a seeded sample of its train split
(`task/replay_candidates.json`, at most `earlier_replay_candidates` examples) and a later release
draws its earlier-task part from its ancestors' candidates, round-robin over the tasks (newest
first), each task's candidates in a seeded order. The policy is uniform: which earlier examples a
new task would make the model forget is not predicted (their columns are not in the matrix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.pipeline.inputs import Upstream
from service.release.chain import EarlierTask
from service.release.state import ReleaseState
from service.settings import Settings
from service.tracking.store import RunHandle, Tracker

CANDIDATES = "task/replay_candidates.json"


def sample(scores: np.ndarray, budget: int, upstream: Upstream, settings: Settings,
           strategy: str, seed: int, taken: list[str] | None = None) -> tuple[list[str], list[float]]:
    """`budget` distinct replayable upstream examples: never held-out ones, nor those already
    `taken` (the warm-up's, so that warm-up and plan together stay within one budget)."""
    from forgetting.replay import sample_replay

    exclude = upstream.heldout
    if taken:
        used = set(taken)  # a set lookup per id: np.isin on 10^6 object ids sorts them all
        exclude = exclude | np.fromiter((i in used for i in upstream.ids), dtype=bool, count=upstream.n)
    plan = sample_replay(scores, budget, temperature=settings.temperature, strategy=strategy,
                         exclude=exclude, seed=seed)
    return [upstream.ids[i] for i in plan.indices], [float(w) for w in plan.weights]


def upstream_budget(state: ReleaseState) -> int:
    """The part of the budget stored upstream examples fill."""
    return state.budget - state.self_budget - state.earlier_budget


def log_candidates(run: RunHandle, train: list[Any], n: int, seed: int) -> None:
    """A seeded sample of at most `n` train examples: what later releases may replay of this task."""
    if n <= 0 or not train:
        return
    pick = np.random.default_rng(seed).permutation(len(train))[:n]
    run.log_dict({"examples": [{"id": train[i].id, "prompt": train[i].prompt,
                                "response": train[i].response} for i in sorted(pick)]}, CANDIDATES)


def earlier_examples(tracker: Tracker, earlier: list[EarlierTask], n: int,
                     seed: int) -> list[dict[str, str]]:
    """`n` distinct candidates of the earlier tasks, round-robin over the tasks (newest first),
    each task's candidates in a seeded order; fewer when the candidates run out. Releases made
    before the candidates artifact offer none."""
    queues = []
    for k, e in enumerate(reversed(earlier)):
        data = tracker.load_dict(e.run_id, CANDIDATES, missing_ok=True)
        items = (data or {}).get("examples", [])
        order = np.random.default_rng([seed, k]).permutation(len(items))
        queues.append([{**items[i], "task": e.task, "version": e.version} for i in order])
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(out) < n and any(queues):
        for q in queues:
            while q and len(out) < n:
                ex = q.pop(0)
                if ex["id"] not in seen:
                    seen.add(ex["id"])
                    out.append(ex)
                    break
    return out


def extra_pool(state: ReleaseState) -> list[Any]:
    """The replayable examples besides the upstream set: the parent's samples, earlier tasks'."""
    from training.data import Example

    return ([Example.text(d["text"], "self") for d in state.self_examples]
            + [Example(d["id"], d["prompt"], d["response"], f"earlier:{d['task']}")
               for d in state.earlier_examples])


def log_plan(child: RunHandle, state: ReleaseState, upstream: Upstream,
             predicted: np.ndarray | None, online: bool) -> None:
    import pandas as pd

    from service.tracking.store import TAG

    child.set_tags({TAG + "method": state.effective, TAG + "note": state.note or "-"})
    child.log_dict({"method": state.effective, "note": state.note, "replay_ids": state.plan_ids,
                    "weights": state.plan_weights,
                    "warmup_replay_ids": state.warmup_ids if online else None,
                    "self_replay_ids": [d["id"] for d in state.self_examples] or None,
                    "earlier_replay": [{k: d[k] for k in ("id", "task", "version")}
                                       for d in state.earlier_examples] or None},
                   "replay/plan.json")
    if predicted is not None:
        child.log_dataframe(pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources,
                                          "predicted": predicted, "heldout": upstream.heldout}),
                            "replay/predicted_row.parquet")
    if state.matrix_check is not None:
        child.log_metrics({"probe_cv_rmse_x100": state.matrix_check["rmse_x100"],
                           "probe_cv_rmse_additive_x100": state.matrix_check["baseline_rmse_x100"]})
        child.tracker.client.set_tag(state.run_id, TAG + "matrix_check",
                                     "stale" if state.matrix_check["stale"] else "ok")
    if state.probes and state.probe_delta is not None:
        child.log_dict({"probe_ids": [upstream.ids[i] for i in state.probes],
                        "probe_delta": state.probe_delta}, "replay/probes.json")
