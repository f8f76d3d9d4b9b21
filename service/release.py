"""The release loop: `ftctl release new-task`.

Online mode (default, one fine-tune, the study's "partition" variant)::

    champion ─► first warmup_fraction of the steps on task + random replay
             ─► measure k probes (now vs champion) ─► complete the row (fold-in)
             ─► replay plan: budget int(|task|·r)+1, p ∝ softmax(pred/T), never held-out
             ─► remaining steps on task + planned replay
             ─► measure held-out set + probes ─► log ─► register @candidate ─► gate ─► @champion

Offline mode: plain fine-tune → probes → predict → a second fine-tune from the champion with
the planned replay. Methods `random` (uniform replay), `none` (no replay) and `oracle` (a plain
fine-tune measures the true row, which then drives the replay) are the baselines.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.compute import (
    TrainOutcome,
    TrainSpec,
    finetune_config,
    replay_steps,
    step_messages,
    task_steps,
    train_and_measure,
)
from service.context import Task, Upstream, load_or_measure_nll, load_upstream, resolve_task
from service.errors import ServiceError
from service.jobs import job_id_for, run_job
from service.matrixstore import assemble
from service.registry import CHAMPION, Registry, Version
from service.rows import log_row, make_row
from service.settings import METHODS, Settings
from service.stats import check_digest, log_inputs, log_training, model_key, plain_row, train_key
from service.tracking import TAG, RunHandle, Tracker

COMPLETION_METHODS = ("mf", "als", "knn", "knn_pearson", "additive", "semantic")


@dataclass(frozen=True)
class ReleaseRequest:
    task: str
    method: str = ""  # "" = settings.method
    mode: Literal["online", "offline"] = "online"
    name: str = ""
    steps: int = 0  # 0 = settings.steps
    job_id: str = ""
    promote: bool = True  # move @champion when the gate passes
    register: bool = True
    measure_all: bool = False  # log the whole row, not only held-out + probes
    parent_version: int = 0  # 0 = the current @champion
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.method and self.method not in METHODS:
            raise ServiceError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in ("online", "offline"):
            raise ServiceError(f"unknown mode {self.mode!r}; use online or offline")


@dataclass
class Plan:
    """What the replay will be: the chosen upstream ids and how they were chosen."""

    method: str
    ids: list[str]
    weights: list[float]
    predicted: np.ndarray | None = None
    probe_idx: np.ndarray | None = None
    probe_delta: np.ndarray | None = None
    note: str = ""
    warmup_ids: list[str] | None = None  # online: the random replay before the probes


def _sample(scores: np.ndarray, budget: int, upstream: Upstream, settings: Settings,
            strategy: str, seed: int) -> tuple[list[str], list[float]]:
    from forgetting.replay import sample_replay

    plan = sample_replay(scores, budget, temperature=settings.temperature, strategy=strategy,
                         exclude=upstream.heldout, seed=seed)
    return [upstream.ids[i] for i in plan.indices], [float(w) for w in plan.weights]


class Predictor:
    """Completion of the new task's row from its probes, with an explained fallback."""

    def __init__(self, settings: Settings, tracker: Tracker, upstream: Upstream, parent: Version,
                 method: str, task: Task) -> None:
        from forgetting.completion import make_completer
        from forgetting.probes import choose_probes
        from service.predict import make_method

        self.method, self.note, self.task_embedding = method, "", None
        self.completer = make_method(settings, method, upstream)
        got = assemble(tracker, upstream, base_version=parent.version,
                       min_rows=self.completer.min_rows, exclude_tasks=frozenset({task.name}))
        self.rows = got.matrix.values.shape[0]
        self.note = got.note
        if self.rows < self.completer.min_rows:
            fallback = "additive" if self.rows >= make_completer("additive").min_rows else "random"
            self.note = (f"{method} needs {self.completer.min_rows} known rows, the matrix has "
                         f"{self.rows} ({got.note}); fell back to {fallback}. Collect more with "
                         "`ftctl stats collect`")
            self.method = fallback
            self.completer = make_completer(fallback) if fallback != "random" else None
        if self.completer is not None:
            self.completer.fit(got.matrix.values)
        if self.method == "semantic":
            from training.world.embeddings import task_embedding

            self.task_embedding = task_embedding(task.train, settings.cache_dir / "embeddings")
        self.probes = choose_probes(upstream.n, min(settings.k, int((~upstream.heldout).sum())),
                                    seed=settings.seed, exclude=upstream.heldout)

    def predict(self, probe_delta: np.ndarray) -> np.ndarray | None:
        if self.completer is None:
            return None
        pred = self.completer.fold_in(self.probes, probe_delta, task_embedding=self.task_embedding)
        return np.asarray(pred, dtype=np.float64)


def release_new_task(settings: Settings, req: ReleaseRequest,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    tracker = Tracker(settings)
    registry = Registry(tracker)
    parent = registry.get(req.parent_version) if req.parent_version else registry.champion()
    upstream = load_upstream(settings)
    check_digest(settings, parent, upstream)
    task = resolve_task(settings, req.task)
    method = req.method or settings.method
    seed = settings.seed if req.seed is None else req.seed
    steps = req.steps or task_steps(settings)
    settings = settings.replace(steps=steps, seed=seed)
    ratio = 0.0 if method == "none" else settings.replay_ratio
    cfg = finetune_config(settings, replay_steps(steps, ratio), seed).to_dict()
    job_id = req.job_id or job_id_for(
        "release", task=task.digest, parent=parent.version, method=method, mode=req.mode,
        config=cfg, settings={k: getattr(settings, k) for k in
                              ("k", "replay_ratio", "temperature", "heldout", "heldout_seed")},
        digest=upstream.digest, line=settings.model_line, measure_all=req.measure_all,
        register=req.register)
    tags = {TAG + "task": task.name, TAG + "family": task.family, TAG + "task_digest": task.digest,
            TAG + "digest": upstream.digest, TAG + "base_version": str(parent.version),
            TAG + "method": method, TAG + "mode": req.mode,
            TAG + "row": "full" if req.measure_all else "partial"}
    if method == "none":  # a plain fine-tune: its row can stand in for oracle / offline probes
        tags[TAG + "train_key"] = train_key(settings, task, parent, upstream)

    def body(run: RunHandle) -> dict[str, Any]:
        run.log_params({"settings": settings.to_dict(), "finetune": cfg,
                        "release": dataclasses.asdict(req) | {"method": method}})
        log_inputs(run, task, upstream)
        before = load_or_measure_nll(settings, model_key(settings, parent), upstream,
                                     registry.local_dir(parent))
        t0 = time.perf_counter()
        out = _release_body(settings, tracker, registry, run, parent, upstream, task, method,
                            req, before, say, job_id)
        return {**out, "seconds": time.perf_counter() - t0}

    say(f"release {task.name}: method {method}, mode {req.mode}, from version {parent.version}")
    return run_job(tracker, kind="release", job_id=job_id, name=req.name or f"release:{task.name}",
                   tags=tags, body=body)


def _release_body(settings: Settings, tracker: Tracker, registry: Registry, run: RunHandle,
                  parent: Version, upstream: Upstream, task: Task, method: str,
                  req: ReleaseRequest, before: np.ndarray, say: Callable[[str], None],
                  job_id: str) -> dict[str, Any]:
    from forgetting.replay import replay_budget

    budget = replay_budget(len(task.train), settings.replay_ratio)
    model_dir = str(registry.local_dir(parent))
    save_dir = str(settings.workspace.resolve() / "models" / run.run_id)
    ratio = 0.0 if method == "none" else settings.replay_ratio
    total_steps = replay_steps(settings.steps, ratio)
    plan = Plan(method=method, ids=[], weights=[])
    probe_spec: Any = None
    predictor: Predictor | None = None

    def spec(measure: np.ndarray, replay_ids: list[str], save: str | None) -> TrainSpec:
        return TrainSpec(settings=settings, task_ref=req.task, model_dir=model_dir, steps=total_steps
                         if replay_ids else settings.steps, measure=measure, replay_ids=replay_ids,
                         replay_ratio=ratio if replay_ids else 0.0, save_dir=save, seed=settings.seed)

    if method in COMPLETION_METHODS:
        predictor = Predictor(settings, tracker, upstream, parent, method, task)
        plan.method, plan.note, plan.probe_idx = predictor.method, predictor.note, predictor.probes
        if predictor.note and "fell back" in predictor.note:
            run.set_tags({TAG + "fallback": predictor.note})
            say(f"note: {predictor.note}")
    if method == "random" or (predictor is not None and predictor.method == "random"):
        plan.ids, plan.weights = _sample(np.zeros(upstream.n), budget, upstream, settings, "uniform",
                                         settings.seed)
    elif method == "oracle" or (predictor is not None and req.mode == "offline"):
        # A plain fine-tune first: its probes (offline) or its whole row (oracle) drive the replay.
        # One that already ran with the same recipe and seed (a statistics job, a no-replay
        # release) is reused: it trained exactly this model.
        measure = np.arange(upstream.n) if method == "oracle" else predictor.probes  # type: ignore[union-attr]
        found = plain_row(tracker, train_key(settings, task, parent, upstream), upstream)
        if found is not None:
            delta = found[0][measure]
            plan.note = "; ".join(x for x in (plan.note, f"plain fine-tune reused from run {found[1]}") if x)
            run.set_tags({TAG + "plain_run": found[1]})
            say(f"reusing the plain fine-tune of run {found[1][:8]} (same recipe and seed)")
        else:
            with tracker.run("plain-finetune", parent_id=run.run_id,
                             tags={TAG + "stage": "plain-finetune"}) as child:
                first = train_and_measure(spec(measure, [], None),
                                          logger=_lightning_logger(tracker, child.run_id),
                                          progress=step_messages(say, f"plain fine-tune {task.name}"))
                log_training(child, first)
            delta = first.nll_after - before[measure]
        if method == "oracle":
            plan.predicted = np.asarray(delta)
        else:
            plan.probe_delta = delta
            plan.predicted = predictor.predict(delta)  # type: ignore[union-attr]
        plan.ids, plan.weights = _sample(plan.predicted, budget, upstream, settings, "softmax",
                                         settings.seed)
    elif predictor is not None:  # online: random replay during warm-up, then the predicted plan
        from training.finetune import ProbeSpec

        plan.ids, plan.weights = _sample(np.zeros(upstream.n), budget, upstream, settings,
                                         "uniform", settings.seed)

        def on_probe(_ids: list[str], probe_delta: np.ndarray) -> list[tuple[str, float]]:
            plan.probe_delta = np.asarray(probe_delta, dtype=np.float64)
            plan.predicted = predictor.predict(plan.probe_delta)
            ids, weights = _sample(plan.predicted, budget, upstream, settings, "softmax",
                                   settings.seed + 1)
            plan.warmup_ids, plan.ids, plan.weights = plan.ids, ids, weights
            say(f"probes measured after warm-up: mean ΔNLL {plan.probe_delta.mean():+.4f}; "
                f"replaying {len(ids)} predicted examples")
            return list(zip(ids, weights, strict=True))

        probe_spec = ProbeSpec(examples=[upstream.examples[i] for i in predictor.probes],
                               nll_before=before[predictor.probes],
                               at_fraction=settings.warmup_fraction, on_probe=on_probe)

    measure = np.flatnonzero(upstream.heldout)
    if plan.probe_idx is not None:
        measure = np.union1d(measure, plan.probe_idx)
    if req.measure_all:
        measure = np.arange(upstream.n)
    with tracker.run("train", parent_id=run.run_id, tags={TAG + "stage": "train"}) as child:
        logger = _lightning_logger(tracker, child.run_id)
        outcome = train_and_measure(spec(measure, plan.ids, save_dir), probe=probe_spec, logger=logger,
                                    progress=step_messages(say, f"fine-tuning {task.name}"))
        log_training(child, outcome)
    with tracker.run("predict", parent_id=run.run_id, tags={TAG + "stage": "predict"}) as child:
        _log_plan(child, plan, upstream, outcome)
    with tracker.run("measure", parent_id=run.run_id, tags={TAG + "stage": "measure"}) as child:
        row = make_row([upstream.ids[i] for i in measure], [upstream.sources[i] for i in measure],
                       before[measure], outcome.nll_after, replayed=set(outcome.replayed_ids),
                       heldout=upstream.heldout[measure])
        metrics = log_row(child, row, upstream.texts, title=f"release: {task.name} ({plan.method})")
    run.log_dataframe(row, "forgetting/row.parquet")
    run.log_metrics({**metrics, "task_loss_before": outcome.test_before,
                     "task_loss_after": outcome.test_after, "replay_budget": float(len(plan.ids))})
    gate = evaluate_gate(settings, metrics, outcome)
    run.set_tags({TAG + "gate": "passed" if gate["passed"] else "failed",
                  TAG + "gate_reasons": "; ".join(gate["reasons"]) or "ok"})
    result: dict[str, Any] = {
        "task": task.name, "method": plan.method, "requested_method": method, "mode": req.mode,
        "parent_version": parent.version, "heldout_forgetting": metrics.get("heldout_forgetting_mean"),
        "task_loss_before": outcome.test_before, "task_loss_after": outcome.test_after,
        "replayed": len(set(outcome.replayed_ids)), "budget": len(plan.ids), "gate": gate,
        "note": plan.note, "per_source": {k.split(".", 1)[1]: v for k, v in metrics.items()
                                          if k.startswith("forgetting_source.")},
        "heldout_per_source": row[row["heldout"]].groupby("source")["delta"].mean().to_dict(),
        "version": None, "champion": False,
    }
    if req.register:  # last: nothing after it can fail and leave a version behind a FAILED run
        # An earlier attempt of this job that died after registering left its version: reuse it.
        version = next((v for v in registry.versions() if v.tags.get(TAG + "job_id") == job_id), None)
        if version is None:
            run.log_artifacts(Path(save_dir), "model")
            version = registry.register(run.run_id, "model", {
                TAG + "parent_version": parent.version, TAG + "task": task.name,
                TAG + "method": plan.method, TAG + "gate": "passed" if gate["passed"] else "failed",
                TAG + "digest": upstream.digest, TAG + "job_id": job_id})
        result["version"] = version.version
        if gate["passed"] and req.promote:
            registry.set_alias(CHAMPION, version.version)
            result["champion"] = True
        say(f"registered version {version.version} @candidate"
            + (", promoted to @champion" if result["champion"] else
               f", not promoted ({'; '.join(gate['reasons']) or 'promotion not requested'})"))
    shutil.rmtree(save_dir, ignore_errors=True)
    return result


def evaluate_gate(settings: Settings, metrics: dict[str, float], outcome: TrainOutcome) -> dict[str, Any]:
    reasons = []
    held = metrics.get("heldout_forgetting_mean", float("nan"))
    if not held <= settings.gate_max_heldout_forgetting:
        reasons.append(f"held-out forgetting {held:.4f} > budget {settings.gate_max_heldout_forgetting}")
    if settings.gate_require_task_gain and not outcome.test_after < outcome.test_before:
        reasons.append(f"task loss did not improve ({outcome.test_before:.4f} → {outcome.test_after:.4f})")
    return {"passed": not reasons, "reasons": reasons, "heldout_forgetting": held,
            "budget": settings.gate_max_heldout_forgetting}


def _log_plan(run: RunHandle, plan: Plan, upstream: Upstream, outcome: TrainOutcome) -> None:
    import pandas as pd

    run.set_tags({TAG + "method": plan.method, TAG + "note": plan.note or "-"})
    run.log_dict({"method": plan.method, "note": plan.note, "replay_ids": plan.ids,
                  "weights": plan.weights, "warmup_replay_ids": plan.warmup_ids,
                  "replayed_ids": sorted(set(outcome.replayed_ids))}, "replay/plan.json")
    if plan.predicted is not None:
        df = pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources,
                           "predicted": plan.predicted, "heldout": upstream.heldout})
        run.log_dataframe(df, "replay/predicted_row.parquet")
    if plan.probe_idx is not None and plan.probe_delta is not None:
        run.log_dict({"probe_ids": [upstream.ids[i] for i in plan.probe_idx],
                      "probe_delta": [float(x) for x in plan.probe_delta]}, "replay/probes.json")


def _lightning_logger(tracker: Tracker, run_id: str) -> Any:
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(tracking_uri=tracker.uri, run_id=run_id, log_model=False)

