"""The release gate: what a release must show before it may become @champion.

Held-out (never replayed) forgetting within the absolute budget, optionally within a multiple
of random replay's on the same task from the same parent, and the task actually learned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from service.release.chain import Retention
from service.settings import Settings
from service.tracking.store import TAG, Tracker


@dataclass(frozen=True)
class ReplayUse:
    """What a release replayed against its budget (shown by the gate and every report)."""

    budget: int  # distinct upstream examples allowed: int(|task train| * ratio) + 1; 0 = none
    distinct: int  # distinct upstream examples replayed
    slots: int  # replay positions trained on
    slot_share: float  # slots / all positions trained on (the ratio r / (1 + r) by design)
    ratio: float  # the replay ratio r


@dataclass(frozen=True)
class ChainUse:
    """Where the release leaves the chain: drift from the line's base and earlier tasks' losses."""

    base_version: int
    heldout_vs_base: float | None  # held-out ΔNLL against the base (None: nothing held out)
    retention: list[Retention]  # each earlier task's test loss now vs just after its release


@dataclass(frozen=True)
class Gate:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed
    heldout_forgetting: float
    budget: float
    random_baseline: float | None
    replay: ReplayUse | None = None
    chain: ChainUse | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"


def evaluate_gate(settings: Settings, metrics: dict[str, float], task_loss_before: float,
                  task_loss_after: float, random_baseline: float | None = None,
                  replay: ReplayUse | None = None, chain: ChainUse | None = None) -> Gate:
    """Judge a release by its logged metrics; nothing measured (NaN) is never a pass. A release
    that replayed more distinct examples than its budget, or more slots than its ratio allows,
    broke the budget contract and does not pass."""
    reasons = []
    if replay is not None:
        if replay.distinct > replay.budget:
            reasons.append(f"replayed {replay.distinct} distinct upstream examples > budget "
                           f"{replay.budget}")
        # One slot in (1 + r) positions by design; +1 position of rounding slack.
        if replay.slot_share > replay.ratio / (1 + replay.ratio) + 1e-9 and replay.slots > 1:
            allowed = replay.ratio / (1 + replay.ratio)
            reasons.append(f"replay took {replay.slot_share:.4f} of the training positions > "
                           f"{allowed:.4f} (ratio {replay.ratio:g})")
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
    if chain is not None:
        reasons += chain_reasons(settings, chain)
    if settings.gate_require_task_gain and not task_loss_after < task_loss_before:
        reasons.append(f"task loss did not improve ({task_loss_before:.4f} → {task_loss_after:.4f})")
    return Gate(passed=not reasons, reasons=reasons, heldout_forgetting=held,
                budget=settings.gate_max_heldout_forgetting, random_baseline=random_baseline,
                replay=replay, chain=chain)


def chain_reasons(settings: Settings, chain: ChainUse) -> list[str]:
    """The chain's budgets (0 = off): drift from the base, and each earlier task's loss increase
    since its own release. A figure that could not be measured is no failure (a first release
    has no earlier task; an old parent has no logged test split)."""
    reasons = []
    cap = settings.gate_max_cumulative_forgetting
    if cap > 0 and chain.heldout_vs_base is not None and not chain.heldout_vs_base <= cap:
        reasons.append(f"held-out forgetting vs the base (version {chain.base_version}) "
                       f"{chain.heldout_vs_base:.4f} > cumulative budget {cap}")
    cap = settings.gate_max_earlier_task_loss_increase
    if cap > 0:
        for r in chain.retention:
            if not r.increase <= cap:
                reasons.append(f"earlier task {r.task} (version {r.version}) lost {r.increase:+.4f} "
                               f"nats of test loss since its release > budget {cap}")
    return reasons


def random_baseline(tracker: Tracker, task_digest: str, parent_version: int) -> float | None:
    """Held-out forgetting of the latest finished random-replay release of this task data from
    this parent (what a relative gate compares with)."""
    runs = tracker.find_runs({TAG + "kind": "release", TAG + "role": "job", TAG + "method": "random",
                              TAG + "task_digest": task_digest, TAG + "base_version": str(parent_version)})
    values = [r.data.metrics.get("heldout_forgetting_mean") for r in runs]
    values = [v for v in values if v is not None]
    return float(values[-1]) if values else None
