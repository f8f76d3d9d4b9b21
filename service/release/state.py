"""The typed state a release hands from one stage to the next, and its JSON form.

The in-process loop passes the object itself; the Celery stage tasks pass `to_json()` (JSON
only, no pickle) and rebuild it with `decode`. The JSON carries `state_version`: a message
queued by another ftctl version is understood when its version is known, or refused with the
fix (resubmit the job) — never half-read. Bump STATE_VERSION when a field changes meaning or
a required field is added, and teach `decode` the old form if it can be mapped.

The state holds ids, indices and paths only — never a tensor or a row: rows and models travel
through the tracking store and the workspace.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from service.errors import ServiceError
from service.release.chain import EarlierTask, Retention

STATE_VERSION = 2


@dataclass
class Outcome:
    """What the release's fine-tune measured (the train stage), for the gate and the result."""

    metrics: dict[str, float]
    task_loss_before: float
    task_loss_after: float
    replayed: int  # distinct upstream examples replayed
    heldout_per_source: dict[str, float]
    replay_slots: int = 0  # replay positions trained on (an example replayed twice counts twice)
    replay_slot_share: float = 0.0  # replay_slots / all positions trained on
    budget: int = 0  # distinct upstream examples the release may replay (0: no replay)
    heldout_vs_base: float | None = None  # held-out ΔNLL against the line's base (release 0)
    retention: list[Retention] = field(default_factory=list)  # the chain's earlier tasks


@dataclass
class ReleaseState:
    """Everything the stages of one release share. `open_release` fills the first block; each
    stage fills its own (begin → warmup → predict → train) and `finish` reads them all."""

    # -- fixed when the release opens (service/release/request.py) ---------------------------
    job_id: str
    run_id: str
    task_ref: str
    task_name: str
    task_digest: str
    method: str  # what was asked for
    mode: Literal["online", "offline"]
    seed: int
    steps: int
    parent_version: int
    model_dir: str
    model_key: str
    train_key: str
    digest: str  # upstream set
    measure_all: bool
    register: bool
    promote: bool
    save_dir: str
    ckpt_dir: str
    started: float
    # The chain this release extends (service/release/chain.py): the line's base and the tasks
    # the parent's ancestry learned, for forgetting vs base and earlier-task retention.
    base_version: int = 0  # 0: not known (a state from before chains)
    base_key: str = ""
    earlier: list[EarlierTask] = field(default_factory=list)
    # -- begin: method, budget, probes, warm-up replay ----------------------------------------
    effective: str = ""  # the method used (the requested one, or its fallback)
    fallback: str | None = None  # why the requested method was not used; None = it was
    note: str = ""  # what the user is told about how the release ran
    budget: int = 0  # distinct examples a replay plan may hold (stored and self-generated)
    replay_source: str = "upstream"  # upstream | self | mix (release.request.REPLAY_SOURCES)
    self_budget: int = 0  # the part of `budget` the parent's own samples fill
    self_examples: list[dict[str, str]] = field(default_factory=list)  # {"id", "text"}, generated
    earlier_budget: int = 0  # the part of `budget` the chain's earlier tasks' examples fill
    earlier_examples: list[dict[str, Any]] = field(default_factory=list)  # release.plan.earlier_examples
    ratio: float = 0.0  # replay slots per task example
    total_steps: int = 0  # steps with the (1 + r) replay extension
    rows: list[str] | None = None  # the matrix rows (run ids) the completion uses
    probes: list[int] = field(default_factory=list)  # upstream column indices
    warmup_ids: list[str] = field(default_factory=list)
    warmup_weights: list[float] = field(default_factory=list)
    plain_run: str | None = None  # a finished plain fine-tune reused for its row
    # -- warmup ------------------------------------------------------------------------------
    switch_step: int | None = None  # online: the step after which the plan replaces the warm-up's
    probe_delta: list[float] | None = None  # ΔNLL of the probes
    plain_child: str | None = None  # the plain fine-tune this release ran itself (its row)
    # -- predict -----------------------------------------------------------------------------
    plan_ids: list[str] = field(default_factory=list)
    plan_weights: list[float] = field(default_factory=list)
    matrix_check: dict[str, Any] | None = None  # forgetting.staleness.probe_check, as a dict
    # -- train -------------------------------------------------------------------------------
    outcome: Outcome | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, **dataclasses.asdict(self)}


@dataclass
class Finished:
    """A release whose job id already finished: every later stage passes its result through."""

    job_id: str
    result: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "job_id": self.job_id, "result": self.result}


def decode(data: Any, stage: str) -> ReleaseState | Finished:
    """The state a stage task received, checked: a known version and exactly the known fields."""
    if not isinstance(data, dict):
        raise ServiceError(f"bad arguments: ftctl.release_{stage} takes the state of the stage "
                           f"before it (a JSON object), got {type(data).__name__}")
    version = data.get("state_version")
    if version != STATE_VERSION:
        raise ServiceError(
            f"ftctl.release_{stage} got a release state of version {version!r} (this worker reads "
            f"version {STATE_VERSION}); it was queued by another ftctl version. Fix: run the same "
            "ftctl version on every worker, then `ftctl jobs retry JOB_ID` to resubmit the release")
    body = {k: v for k, v in data.items() if k != "state_version"}
    if "result" in body:
        return Finished(job_id=str(body.get("job_id", "")), result=body["result"])
    known = {f.name for f in dataclasses.fields(ReleaseState)}
    unknown = sorted(set(body) - known)
    missing = sorted(f.name for f in dataclasses.fields(ReleaseState)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                     and f.name not in body)
    if unknown or missing:
        raise ServiceError(f"bad arguments: ftctl.release_{stage} state has unknown fields {unknown} "
                           f"and lacks {missing}; resubmit the release with `ftctl jobs retry`")
    if isinstance(body.get("outcome"), dict):
        out = dict(body["outcome"])
        out["retention"] = [Retention(**r) for r in out.get("retention", [])]
        body["outcome"] = Outcome(**out)
    body["earlier"] = [EarlierTask(**e) for e in body.get("earlier", [])]
    return ReleaseState(**body)
