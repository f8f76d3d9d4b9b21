"""The release gate: what a release must show before it may become @champion.

Held-out (never replayed) forgetting within the absolute budget, optionally within a multiple
of random replay's on the same task from the same parent, and the task actually learned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from service.settings import Settings
from service.tracking.store import TAG, Tracker


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed
    heldout_forgetting: float
    budget: float
    random_baseline: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"


def evaluate_gate(settings: Settings, metrics: dict[str, float], task_loss_before: float,
                  task_loss_after: float, random_baseline: float | None = None) -> Gate:
    """Judge a release by its logged metrics; nothing measured (NaN) is never a pass."""
    reasons = []
    held = metrics.get("heldout_forgetting_mean", float("nan"))
    if not held <= settings.gate_max_heldout_forgetting:
        reasons.append(f"held-out forgetting {held:.4f} > budget {settings.gate_max_heldout_forgetting}")
    factor = settings.gate_max_relative_to_random
    if factor > 0:
        if random_baseline is None:
            reasons.append("no random-replay release of this task from this parent to compare with: "
                           "run `ftctl release new-task TASK --method random --no-promote` first")
        elif not held <= factor * random_baseline:
            reasons.append(f"held-out forgetting {held:.4f} > {factor:g} x random replay's "
                           f"{random_baseline:.4f}")
    if settings.gate_require_task_gain and not task_loss_after < task_loss_before:
        reasons.append(f"task loss did not improve ({task_loss_before:.4f} → {task_loss_after:.4f})")
    return Gate(passed=not reasons, reasons=reasons, heldout_forgetting=held,
                budget=settings.gate_max_heldout_forgetting, random_baseline=random_baseline)


def random_baseline(tracker: Tracker, task_digest: str, parent_version: int) -> float | None:
    """Held-out forgetting of the latest finished random-replay release of this task data from
    this parent (what a relative gate compares with)."""
    runs = tracker.find_runs({TAG + "kind": "release", TAG + "role": "job", TAG + "method": "random",
                              TAG + "task_digest": task_digest, TAG + "base_version": str(parent_version)})
    values = [r.data.metrics.get("heldout_forgetting_mean") for r in runs]
    values = [v for v in values if v is not None]
    return float(values[-1]) if values else None
