"""A model line is a chain of releases: every release starts from the @champion, which was itself
a release. What a chain loses adds up, so each release is measured against the whole chain:

    held-out forgetting vs parent   ΔNLL on the never-replayed upstream examples (the gate's budget)
    held-out forgetting vs base     the same against release 0 — drift that ten small steps add up to
    earlier-task retention          for every task an ancestor release learned: its test loss now
                                    minus its test loss just after that release (> 0: forgotten)

The base's NLL comes from the line's cache (measured at init); an earlier task's test split from
its release run (artifact task/test.json, logged by every release), so retention is measured
whatever happened to the user's task file since. Mean retention over the earlier tasks is
Avalanche's backward transfer with the sign flipped to a loss (BWT = −mean increase).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from service.tracking.registry import Registry, Version
from service.tracking.store import TAG, RunHandle, Tracker

TEST_SPLIT = "task/test.json"


@dataclass(frozen=True)
class EarlierTask:
    """A task an ancestor release learned: what its loss was just after that release."""

    version: int
    task: str
    run_id: str  # the ancestor's release run (its test split is an artifact there)
    loss_at_release: float


@dataclass(frozen=True)
class Retention:
    """An earlier task's test loss now (after this release) against just after its own release."""

    version: int
    task: str
    loss_at_release: float
    loss_now: float

    @property
    def increase(self) -> float:
        return self.loss_now - self.loss_at_release

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "increase": self.increase}


def earlier_tasks(tracker: Tracker, chain: list[Version]) -> list[EarlierTask]:
    """The tasks the releases of `chain` learned (not the base), oldest first, with the test
    loss each release logged; a release run without the figure is skipped."""
    out = []
    for v in reversed(chain):
        if v.tags.get(TAG + "parent_version", "none") == "none":
            continue  # the base learned no task
        run = tracker.get_run(v.run_id)  # a missing run: a ServiceError naming it, not a raw MLflow error
        loss = run.data.metrics.get("task_loss_after")
        if loss is not None:
            out.append(EarlierTask(version=v.version, task=v.tags.get(TAG + "task", "?"),
                                   run_id=v.run_id, loss_at_release=float(loss)))
    return out


def log_test_split(run: RunHandle, examples: list[Any]) -> None:
    """The release task's test split on its run: what later releases measure retention on."""
    run.log_dict({"examples": [{"id": e.id, "prompt": e.prompt, "response": e.response,
                                "source": e.source} for e in examples]}, TEST_SPLIT)


def load_test_split(tracker: Tracker, run_id: str) -> list[Any] | None:
    """An earlier release's test split (None when that release predates the artifact)."""
    from training.data import Example

    data = tracker.load_dict(run_id, TEST_SPLIT, missing_ok=True)
    if data is None:  # a release from before the artifact: no retention figure for it
        return None
    return [Example(e["id"], e["prompt"], e["response"], e["source"]) for e in data["examples"]]


def retention_metrics(rows: list[Retention]) -> dict[str, float]:
    """Summary metrics of the earlier tasks' retention (none when there is no earlier task)."""
    if not rows:
        return {"earlier_tasks": 0.0}
    inc = [r.increase for r in rows]
    return {"earlier_tasks": float(len(rows)), "earlier_task_loss_increase_mean": sum(inc) / len(inc),
            "earlier_task_loss_increase_max": max(inc)}


def earlier_key(e: EarlierTask) -> str:
    """The name an earlier task's test split is measured under (TrainSpec.eval_sets)."""
    return f"v{e.version}:{e.task}"


def eval_sets(tracker: Tracker, earlier: list[EarlierTask]) -> dict[str, list[Any]]:
    """The earlier tasks' test splits to measure after the fine-tune (those that were logged)."""
    out = {}
    for e in earlier:
        split = load_test_split(tracker, e.run_id)
        if split:
            out[earlier_key(e)] = split
    return out


def base_nll(settings: Any, tracker: Tracker, base_version: int, base_key: str,
             upstream: Any, progress: Any = None) -> Any:
    """The line's base model's upstream NLL: from the line's cache (measured at init), measured
    from the registered base model only when this machine lacks it."""
    from service.pipeline.inputs import load_or_measure_nll, nll_cache

    cached = nll_cache(settings, base_key, upstream).get(upstream.examples)
    if cached is not None:
        return cached
    registry = Registry(tracker)
    model_dir = registry.local_dir(registry.get(base_version))
    return load_or_measure_nll(settings, base_key, upstream, model_dir, progress=progress)


def chain_figures(*, heldout: Any, nll_after: Any, before: Any, base: Any | None,
                  earlier: list[EarlierTask], eval_after: dict[str, float]
                  ) -> tuple[float | None, list[Retention]]:
    """(held-out ΔNLL against the base, earlier-task retention) of a release. `heldout` masks
    the measured columns that are held out; `nll_after` / `before` / `base` are aligned with the
    measured columns (`base` None: the parent is the base)."""
    import numpy as np

    held = np.asarray(heldout, dtype=bool)
    vs_base = None
    if held.any():
        ref = np.asarray(before if base is None else base, dtype=np.float64)
        vs_base = float(np.mean(np.asarray(nll_after, dtype=np.float64)[held] - ref[held]))
    retention = [Retention(e.version, e.task, e.loss_at_release, eval_after[earlier_key(e)])
                 for e in earlier if earlier_key(e) in eval_after]
    return vs_base, retention


def log_chain(run: RunHandle, settings: Any, tracker: Tracker, upstream: Any, *, measure: Any,
              before: Any, nll_after: Any, eval_after: dict[str, float], base_version: int,
              base_key: str, parent_version: int, earlier: list[EarlierTask],
              progress: Any = None) -> tuple[float | None, list[Retention], dict[str, float]]:
    """A release's chain figures, logged on its run (chain/retention.json): (held-out ΔNLL vs
    the base, earlier-task retention, their metrics). `measure` are the measured columns,
    `nll_after` aligned with them, `before` the parent's NLL of every column."""
    base = None
    if base_version and base_version != parent_version:
        base = base_nll(settings, tracker, base_version, base_key, upstream, progress=progress)[measure]
    vs_base, retention = chain_figures(heldout=upstream.heldout[measure], nll_after=nll_after,
                                       before=before[measure], base=base, earlier=earlier,
                                       eval_after=eval_after)
    run.log_dict({"base_version": base_version, "heldout_forgetting_vs_base": vs_base,
                  "earlier_tasks": [r.to_dict() for r in retention]}, "chain/retention.json")
    metrics = retention_metrics(retention) | ({} if vs_base is None else {"heldout_forgetting_vs_base": vs_base})
    return vs_base, retention, metrics
