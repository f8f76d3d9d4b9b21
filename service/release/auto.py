"""`--replay-ratio auto`: the release starts from the replay ratio the line's past releases
calibrate for its gate and, when the gate fails on held-out forgetting, releases again with the
next larger ratio, up to a cap. Every attempt is a release of its own (its run, its figures, its
@candidate version), nested under one `auto-ratio` run that records the attempts.

Calibration (documented, deliberately simple): among the line's last CALIBRATION_RUNS finished
releases that passed their gate with replay, the smallest ratio that passed — rounded up to the
ladder — is where a new release starts; with no such release, the settings' ratio. A gate that
fails for another reason (the task loss did not improve) is not retried: more replay does not
fix it. The ladder doubles the ratio: 1/64, 1/32, 1/16, 1/8, 1/4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import ServiceError
from service.release.request import ReleaseRequest, release_new_task
from service.settings import Settings
from service.tracking.store import TAG, Tracker

LADDER = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
DEFAULT_CAP = 1 / 4
CALIBRATION_RUNS = 10

RunOne = Callable[[Settings, ReleaseRequest], dict[str, Any]]


@dataclass(frozen=True)
class Calibration:
    start: float  # the ratio the first attempt uses
    note: str  # where it comes from, shown and logged


def calibrate(tracker: Tracker, default: float) -> Calibration:
    """The starting ratio from the line's recent releases that passed their gate with replay."""
    runs = tracker.find_runs({TAG + "kind": "release", TAG + "role": "job", TAG + "gate": "passed"})
    ratios = []
    for r in runs[-CALIBRATION_RUNS:]:
        raw = r.data.params.get("settings.replay_ratio")
        if r.data.tags.get(TAG + "method") not in ("none", None) and raw is not None:
            ratios.append(float(raw))
    if not ratios:
        return Calibration(default, f"no earlier release passed its gate with replay: the "
                                    f"settings' ratio {default:g}")
    low = min(ratios)
    start = next((r for r in LADDER if r >= low - 1e-12), LADDER[-1])
    return Calibration(start, f"the smallest ratio that passed the gate among the last "
                              f"{len(ratios)} passing releases: {low:g} (ladder: {start:g})")


def ladder_from(start: float, cap: float) -> list[float]:
    """The ratios to try: `start`, then each larger ladder step up to `cap`."""
    if not 0 < cap <= 1:
        raise ServiceError(f"the auto ratio's cap must be in (0, 1], got {cap}")
    steps = [start] + [r for r in LADDER if r > start + 1e-12]
    return [r for r in steps if r <= cap + 1e-12] or [min(start, cap)]


def _forgetting_failure(result: dict[str, Any]) -> bool:
    return any("held-out forgetting" in why for why in result["gate"]["reasons"])


def release_auto(settings: Settings, req: ReleaseRequest, *, cap: float = DEFAULT_CAP,
                 run_one: RunOne | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Release with the calibrated ratio, then larger ones while the gate fails on forgetting.

    `run_one(settings, request)` runs one attempt to its result: in this process by default
    (`release_new_task`); the CLI passes a remote one (submit, then wait) for `--remote`.
    Returns the last attempt's result with `auto`: the calibration and every attempt's figures.
    """
    say = progress or (lambda _m: None)
    run = run_one or (lambda s, r: release_new_task(s, r, progress=say))
    tracker = Tracker(settings)
    cal = calibrate(tracker, settings.replay_ratio)
    ratios = ladder_from(cal.start, cap)
    say(f"auto ratio: start at r = {cal.start:g} ({cal.note}); up to {ratios[-1]:g}")
    attempts: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    with tracker.run(f"auto-ratio:{req.task}", tags={TAG + "kind": "auto-release",
                                                     TAG + "role": "analysis"}) as parent:
        parent.log_params({"calibration": cal.note, "start": cal.start, "cap": cap})
        for i, ratio in enumerate(ratios):
            attempt = dataclasses.replace(req, name=req.name or f"release:{req.task}:r{ratio:g}",
                                          job_id=f"{req.job_id}-r{ratio:g}" if req.job_id else "")
            result = run(settings.replace(replay_ratio=ratio), attempt)
            tracker.client.set_tag(result["run_id"], "mlflow.parentRunId", parent.run_id)
            passed = bool(result["gate"]["passed"])
            attempts.append({"ratio": ratio, "run_id": result["run_id"], "version": result.get("version"),
                             "heldout_forgetting": result.get("heldout_forgetting"),
                             "budget": result.get("budget"), "replayed": result.get("replayed"),
                             "gate_passed": passed, "reasons": result["gate"]["reasons"]})
            parent.log_metrics({"ratio": ratio, "heldout_forgetting": result.get("heldout_forgetting")
                                or float("nan"), "gate_passed": float(passed)}, step=i)
            say(f"auto ratio: r = {ratio:g} → held-out ΔNLL {result.get('heldout_forgetting')}, "
                f"gate {'passed' if passed else 'failed'}")
            if passed or not _forgetting_failure(result):
                break
        parent.log_dict({"calibration": dataclasses.asdict(cal), "attempts": attempts},
                        "auto/attempts.json")
        parent.set_tags({TAG + "gate": "passed" if attempts[-1]["gate_passed"] else "failed",
                         TAG + "ratio": f"{attempts[-1]['ratio']:g}"})
    return {**result, "auto": {"calibration": dataclasses.asdict(cal), "attempts": attempts,
                               "run_id": parent.run_id}}
