"""The release loop as stages: what runs where, and the typed state handed from one to the next.

    begin     cpu  job id, parent run, completion method (or its fallback), probes, warm-up replay
    warmup    gpu  online: train the first warmup_fraction of the steps with random replay, stop
                   with a checkpoint, measure the probes; offline/oracle: a plain fine-tune (unless
                   one with the same recipe and seed already ran: it is reused)
    predict   cpu  fold the probes into the completion model, sample the replay plan
    train     gpu  online: resume the checkpoint with the planned replay; else train from the
                   parent; measure held-out + probes, log the row, keep the model
    finish    cpu  gate, register @candidate, promote to @champion, record the result

`service.release.release_new_task` runs them in order in one process; the Celery tasks run each on
its queue (service/dist/tasks.py) with the state's JSON as their argument (service/release/state.py). Every stage can be rerun from its input state (a redelivered task): the fine-tunes
resume from their last checkpoint, the registration reuses a version this job already made.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from forgetting.methods import COMPLETION_METHODS
from service.errors import ServiceError
from service.pipeline.completion import completer
from service.pipeline.compute import (
    TrainSpec,
    count_messages,
    finetune_config,
    replay_steps,
    step_messages,
    train_and_measure,
)
from service.pipeline.inputs import Upstream, load_or_measure_nll, load_upstream, resolve_task
from service.pipeline.stats import log_training
from service.release.chain import eval_sets, log_chain
from service.release.gate import ChainUse, ReplayUse, evaluate_gate, random_baseline
from service.release.plan import earlier_examples, extra_pool, log_plan, sample, upstream_budget
from service.release.promotion import register_release
from service.release.report import HELDOUT_SOURCE, controls, log_comparison, log_release_view
from service.release.state import Outcome, ReleaseState
from service.settings import Settings
from service.tracking.jobs import end_job, finished_result
from service.tracking.lineage import plain_row, row_delta
from service.tracking.registry import Registry
from service.tracking.rows import log_row, make_row
from service.tracking.store import TAG, RunHandle, Tracker

Say = Callable[[str], None]


def _quiet(_m: str) -> None:
    pass


def _spec(settings: Settings, state: ReleaseState, measure: np.ndarray, replay_ids: list[str],
          **kw: Any) -> TrainSpec:
    ratio = state.ratio if replay_ids else 0.0
    return TrainSpec(settings=settings, task_ref=state.task_ref, model_dir=state.model_dir,
                     steps=state.total_steps if replay_ids else state.steps, measure=measure,
                     replay_ids=replay_ids, replay_ratio=ratio, seed=state.seed,
                     extra_pool=extra_pool(state), **kw)


@contextmanager
def _child(tracker: Tracker, state: ReleaseState, stage: str) -> Iterator[RunHandle]:
    """A stage's child run (FINISHED when the block ends, FAILED with the reason if it raises);
    one left RUNNING by a dead delivery of this stage ends FAILED first."""
    tracker.fail_stale({"mlflow.parentRunId": state.run_id, TAG + "stage": stage},
                       f"interrupted: the worker running stage {stage} died; the stage ran again")
    with tracker.run(stage, parent_id=state.run_id, tags={TAG + "stage": stage}) as child:
        yield child


def _logger(tracker: Tracker, run_id: str) -> Any:
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(tracking_uri=tracker.uri, run_id=run_id, log_model=False)


def _online(state: ReleaseState) -> bool:
    """Online mode: a warm-up replaying a proportional part of the budget uniformly
    (`forgetting.replay.warmup_budget`), then the rest of the budget chosen by the method (from
    the probes; for `random`, uniformly) — the warm-up's examples stay in the plan, so every
    strategy replays at most `budget` distinct examples (docs/replay-budget.md)."""
    return state.mode == "online" and (state.effective in COMPLETION_METHODS
                                       or state.effective == "random")


def _plain(state: ReleaseState) -> bool:
    """The release needs a plain (no-replay) fine-tune's row: oracle, or offline probes."""
    if state.effective == "self":
        return False
    return state.method == "oracle" or (state.effective in COMPLETION_METHODS
                                        and state.mode == "offline")


def switch_step(fraction: float, total_steps: int) -> int:
    """The optimizer step after which the probes are measured (training.probe.ProbeSpec's rule)."""
    return min(max(1, round(fraction * total_steps)), max(1, total_steps - 1))


def _every(steps: int) -> int:
    return max(1, steps // 10)  # a dead worker loses at most a tenth of a fine-tune


def _add_note(state: ReleaseState, note: str) -> None:
    state.note = "; ".join(x for x in (state.note, note) if x)


def begin(settings: Settings, state: ReleaseState, say: Say = _quiet) -> ReleaseState:
    """cpu: choose the method (or its fallback), the probes and the warm-up replay."""
    from forgetting.probes import choose_probes
    from forgetting.replay import replay_budget, warmup_budget

    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    task = resolve_task(settings, state.task_ref)
    run = tracker.attach(state.run_id)
    method = state.method
    state.budget = replay_budget(len(task.train), settings.replay_ratio)
    state.ratio = 0.0 if method == "none" else settings.replay_ratio
    state.total_steps = replay_steps(state.steps, state.ratio)
    state.effective, state.note, state.fallback = method, "", None
    if method != "none" and state.replay_source != "upstream":
        state.self_budget = (state.budget if state.replay_source == "self"
                             else min(state.budget, max(1, state.budget // 2)))
    if method != "none" and settings.earlier_replay_share > 0 and state.earlier:
        # The chain's earlier tasks: their share of the budget, from their logged candidates.
        share = min(state.budget - state.self_budget, max(1, round(settings.earlier_replay_share * state.budget)))
        state.earlier_examples = earlier_examples(tracker, state.earlier, share, state.seed)
        state.earlier_budget = len(state.earlier_examples)
    if state.replay_source == "self" and method != "none":
        # Every replay example is the parent's own sample: no upstream example to choose, so no
        # probes, no completion and no warm-up.
        state.effective = "self"
        state.note = f"self-generated replay: {state.self_budget} sequences sampled by the parent"
    elif method in COMPLETION_METHODS:
        fit = completer(settings, tracker, upstream, method, state.parent_version, task.name)
        state.effective, state.note, state.fallback = fit.method, fit.note, fit.fallback
        state.rows = fit.rows
        if state.fallback is not None:
            run.set_tags({TAG + "fallback": state.fallback})
            say(f"note: {state.note}")
        k = min(settings.k, int((~upstream.heldout).sum()))
        state.probes = choose_probes(upstream.n, k, seed=state.seed,
                                     exclude=upstream.heldout).tolist()
    if _online(state) or state.effective == "random":
        size = (warmup_budget(upstream_budget(state), settings.warmup_fraction) if _online(state)
                else upstream_budget(state))  # offline random: the whole plan, drawn once
        state.warmup_ids, state.warmup_weights = sample(
            np.zeros(upstream.n), size, upstream, settings, "uniform", state.seed)
    if _plain(state):
        found = plain_row(tracker, state.train_key, upstream.ids, upstream.digest)
        if found is not None:
            state.plain_run = found[1]
            _add_note(state, f"plain fine-tune reused from run {found[1]}")
            run.set_tags({TAG + "plain_run": found[1]})
            say(f"reusing the plain fine-tune of run {found[1][:8]} (same recipe and seed)")
    return state


def warmup(settings: Settings, state: ReleaseState, say: Say = _quiet) -> ReleaseState:
    """gpu: the parent's own samples (self-generated replay); the probes' forgetting after the
    warm-up (online) or after a plain fine-tune."""
    if state.self_budget and not state.self_examples:
        _generate(settings, state, say)
    online = _online(state)
    if not (online or (_plain(state) and not state.plain_run)):
        return state
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    before = load_or_measure_nll(settings, state.model_key, upstream, Path(state.model_dir),
                                 progress=count_messages(say, "measuring the parent model"))
    if online:
        probes = np.asarray(state.probes, dtype=int)  # random: none to measure
        at = switch_step(settings.warmup_fraction, state.total_steps)
        with _child(tracker, state, "warm-up") as child:
            out = train_and_measure(
                _spec(settings, state, probes, state.warmup_ids, checkpoint_dir=state.ckpt_dir,
                      checkpoint_name="warmup", stop_at=at, checkpoint_every=_every(at)),
                logger=_logger(tracker, child.run_id),
                progress=step_messages(say, f"warm-up {state.task_name}", total=at))
            log_training(child, out)
            state.switch_step = at
            if probes.size:
                state.probe_delta = (out.nll_after - before[probes]).tolist()
                child.log_dict({"probe_ids": [upstream.ids[i] for i in probes],
                                "probe_delta": state.probe_delta, "at_step": at}, "replay/probes.json")
                child.log_metrics({"probe_mean_delta": float(np.mean(state.probe_delta))})
        if probes.size:
            say(f"probes measured after the warm-up ({at} steps): mean ΔNLL "
                f"{np.mean(state.probe_delta):+.4f}")
        return state
    measure = np.arange(upstream.n) if state.method == "oracle" else np.asarray(state.probes)
    with _child(tracker, state, "plain-finetune") as child:
        out = train_and_measure(
            _spec(settings, state, measure, [], checkpoint_dir=state.ckpt_dir,
                  checkpoint_name="plain", checkpoint_every=_every(state.steps)),
            logger=_logger(tracker, child.run_id),
            progress=step_messages(say, f"plain fine-tune {state.task_name}"),
            measure_progress=count_messages(say, f"measuring {len(measure)} examples"))
        log_training(child, out)
        row = make_row([upstream.ids[i] for i in measure], [upstream.sources[i] for i in measure],
                       before[measure], out.nll_after, heldout=upstream.heldout[measure])
        child.log_dataframe(row, "forgetting/row.parquet")
    state.plain_child = child.run_id
    return state


def _plain_run(state: ReleaseState) -> str:
    assert state.plain_run or state.plain_child, "predict needs the plain fine-tune of begin or warmup"
    return state.plain_run or state.plain_child  # type: ignore[return-value]


def _generate(settings: Settings, state: ReleaseState, say: Say) -> None:
    """The parent samples `self_budget` sequences (seeded), logged as replay/self_generated.json."""
    import torch

    from service.pipeline.inputs import load_model_for
    from training.generate import generate_replay

    tracker = Tracker(settings)
    model, tok = load_model_for(settings, state.model_dir)
    if torch.cuda.is_available():
        model.to("cuda")
    with _child(tracker, state, "generate") as child:
        got = generate_replay(model, tok, state.self_budget, seed=state.seed,
                              max_new_tokens=settings.self_replay_tokens)
        if not got:
            raise ServiceError("the parent model produced no text to replay (every sample was "
                               "empty). Fix: use --replay-source upstream (or mix)")
        state.self_examples = [{"id": e.id, "text": e.response} for e in got]
        child.log_dict({"seed": state.seed, "max_new_tokens": settings.self_replay_tokens,
                        "examples": state.self_examples}, "replay/self_generated.json")
        child.log_metrics({"generated": float(len(got))})
    say(f"the parent sampled {len(got)} sequences to replay")


def predict(settings: Settings, state: ReleaseState, say: Say = _quiet) -> ReleaseState:
    """cpu: complete the row from the probes and sample the replay plan, p ∝ softmax(pred / T)."""
    if state.method == "none":
        state.plan_ids, state.plan_weights = [], []
        return state
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    predicted = None
    online = _online(state)
    # Online: the warm-up's examples stay in the plan and the rest of the budget is drawn
    # besides them (seed + 1: the warm-up's uniform draw used the seed itself).
    kept_ids = list(state.warmup_ids) if online else []
    kept_weights = list(state.warmup_weights) if online else []
    rest = upstream_budget(state) - len(kept_ids)
    own = [d["id"] for d in state.self_examples + state.earlier_examples]  # always in the plan
    if state.effective == "self":
        ids, weights = [], []
    elif state.effective == "random" and online:
        ids, weights = sample(np.zeros(upstream.n), rest, upstream, settings, "uniform",
                              state.seed + 1, taken=kept_ids)
    elif state.effective == "random":
        ids, weights = state.warmup_ids, state.warmup_weights
    else:
        if state.method == "oracle":
            predicted = row_delta(tracker, _plain_run(state), upstream.ids)
        else:
            predicted = _complete(settings, tracker, state, upstream, online)
        ids, weights = sample(predicted, rest, upstream, settings, "softmax",
                              state.seed + (1 if online else 0), taken=kept_ids)
        if online:
            say(f"replaying the warm-up's {len(kept_ids)} and {len(ids)} predicted examples "
                f"(budget {state.budget}) for the remaining steps")
    state.plan_ids = kept_ids + ids + own
    state.plan_weights = kept_weights + weights + [1.0 / max(len(own), 1)] * len(own)
    with _child(tracker, state, "predict") as child:
        log_plan(child, state, upstream, predicted, online)
    return state


def _complete(settings: Settings, tracker: Tracker, state: ReleaseState, upstream: Upstream,
              online: bool) -> np.ndarray:
    """The predicted row: the probes' ΔNLL folded into the completion model begin chose."""
    probes = np.asarray(state.probes)
    if not online:
        state.probe_delta = row_delta(tracker, _plain_run(state), upstream.ids)[probes].tolist()
    fit = completer(settings, tracker, upstream, state.effective, state.parent_version,
                    state.task_name, rows=state.rows)
    emb = None
    if state.effective == "semantic":
        from training.world.embeddings import task_embedding

        task = resolve_task(settings, state.task_ref)
        emb = task_embedding(task.train, settings.cache_dir / "embeddings")
    assert fit.model is not None and state.probe_delta is not None
    if state.effective not in ("additive", "semantic") and probes.size >= 6:
        # Does the matrix still predict this task? The probes cross-validated against the
        # additive model on the same rows (forgetting.staleness.probe_check).
        from forgetting.staleness import probe_check

        base = completer(settings, tracker, upstream, "additive", state.parent_version,
                         state.task_name, rows=state.rows).model
        chk = probe_check(fit.model, base, probes, np.asarray(state.probe_delta), seed=state.seed)
        state.matrix_check = {**dataclasses.asdict(chk), "stale": chk.stale}
        if chk.stale:
            _add_note(state, f"matrix check: the rows predicted this task's held-back probes no better "
                      f"than example means ({chk.rmse_x100:.2f} vs {chk.baseline_rmse_x100:.2f} "
                      "RMSE x100): rows may be stale; `ftctl stats collect` on the champion")
    return np.asarray(fit.model.fold_in(probes, np.asarray(state.probe_delta), task_embedding=emb),
                      dtype=np.float64)


def train(settings: Settings, state: ReleaseState, say: Say = _quiet) -> ReleaseState:
    """gpu: the release's fine-tune with its replay; measure and log its forgetting row."""
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    before = load_or_measure_nll(settings, state.model_key, upstream, Path(state.model_dir),
                                 progress=count_messages(say, "measuring the parent model"))
    measure = np.flatnonzero(upstream.heldout)
    if state.probes:
        measure = np.union1d(measure, np.asarray(state.probes))
    if state.measure_all:
        measure = np.arange(upstream.n)
    extra: dict[str, Any] = {}
    replay = state.plan_ids
    if _online(state):  # resume the warm-up's checkpoint; the plan serves replay from the switch on
        assert state.switch_step is not None
        cfg = finetune_config(settings, state.total_steps, state.seed)
        per_step = cfg.examples_per_step * cfg.devices
        replay = state.warmup_ids
        extra = {"switches": [(state.switch_step * per_step,
                               list(zip(state.plan_ids, state.plan_weights, strict=True)))],
                 "checkpoint_fallback": str(Path(state.ckpt_dir) / "warmup.ckpt")}
    extra["eval_sets"] = eval_sets(tracker, state.earlier)  # the chain's earlier tasks
    stage = "train" if state.method == "none" else "replay-train"
    with _child(tracker, state, stage) as child:
        out = train_and_measure(
            _spec(settings, state, measure, replay, save_dir=state.save_dir,
                  checkpoint_dir=state.ckpt_dir, checkpoint_every=_every(state.total_steps), **extra),
            logger=_logger(tracker, child.run_id),
            progress=step_messages(say, f"fine-tuning {state.task_name}"),
            measure_progress=count_messages(say, f"measuring {len(measure)} examples"))
        log_training(child, out)
    with _child(tracker, state, "measure") as child:
        row = make_row([upstream.ids[i] for i in measure], [upstream.sources[i] for i in measure],
                       before[measure], out.nll_after, replayed=set(out.replayed_ids),
                       heldout=upstream.heldout[measure])
        metrics = log_row(child, row, upstream.texts, title="", views=False)  # views: on the release run
    run = tracker.attach(state.run_id)
    run.log_dataframe(row, "forgetting/row.parquet")
    vs_base, retention, chain = log_chain(
        run, settings, tracker, upstream, measure=measure, before=before, nll_after=out.nll_after,
        eval_after=out.eval_after, base_version=state.base_version, base_key=state.base_key,
        parent_version=state.parent_version, earlier=state.earlier,
        progress=count_messages(say, "measuring the line's base model"))
    log_release_view(run, row, upstream, f"release: {state.task_name} ({state.effective})",
                     state.warmup_ids, state.plan_ids,
                     {**{d["id"]: "self-generated" for d in state.self_examples},
                      **{d["id"]: f"earlier task {d['task']}" for d in state.earlier_examples}})
    cfg = finetune_config(settings, out.steps, state.seed)
    positions = out.steps * cfg.examples_per_step * cfg.devices  # task + replay slots trained on
    budget = 0 if state.method == "none" else state.budget
    replay = {"replay_budget": float(budget), "replay_distinct": float(len(set(out.replayed_ids))),
              "replay_slots": float(len(out.replayed_ids)),
              "replay_slot_share": len(out.replayed_ids) / max(positions, 1)}
    held_src = row[row["heldout"]].groupby("source")["delta"].mean().to_dict()
    run.log_metrics({**metrics, **replay, **chain, "task_loss_before": out.test_before,
                     "task_loss_after": out.test_after,
                     **{HELDOUT_SOURCE + str(k): float(v) for k, v in held_src.items()}})
    if state.register:
        run.log_artifacts(Path(state.save_dir), "model")
    state.outcome = Outcome(
        metrics=metrics, task_loss_before=out.test_before, task_loss_after=out.test_after,
        replayed=len(set(out.replayed_ids)),
        heldout_per_source=held_src,
        replay_slots=len(out.replayed_ids), replay_slot_share=replay["replay_slot_share"],
        budget=budget, heldout_vs_base=vs_base, retention=retention)
    return state


def finish(settings: Settings, state: ReleaseState, say: Say = _quiet) -> dict[str, Any]:
    """cpu: the gate, the registry, the recorded result; ends the release run FINISHED."""
    tracker = Tracker(settings)
    done = finished_result(tracker, state.job_id)
    if done is not None:  # a redelivered finish: the release is recorded; change nothing
        return done
    assert state.outcome is not None, "finish needs the train stage's outcome"
    o = state.outcome
    run = tracker.attach(state.run_id)
    baseline = (random_baseline(tracker, state.task_digest, state.parent_version)
                if settings.gate_max_relative_to_random > 0 else None)
    gate = evaluate_gate(settings, o.metrics, o.task_loss_before, o.task_loss_after, baseline,
                         replay=ReplayUse(budget=o.budget, distinct=o.replayed, slots=o.replay_slots,
                                          slot_share=o.replay_slot_share, ratio=state.ratio),
                         chain=ChainUse(base_version=state.base_version, heldout_vs_base=o.heldout_vs_base,
                                        retention=o.retention))
    run.set_tags({TAG + "gate": gate.verdict, TAG + "gate_reasons": "; ".join(gate.reasons) or "ok"})
    result: dict[str, Any] = {
        "task": state.task_name, "method": state.effective, "requested_method": state.method,
        "mode": state.mode, "parent_version": state.parent_version,
        "heldout_forgetting": o.metrics.get("heldout_forgetting_mean"),
        "task_loss_before": o.task_loss_before, "task_loss_after": o.task_loss_after,
        "replayed": o.replayed, "budget": o.budget, "replay_slots": o.replay_slots,
        "replay_slot_share": o.replay_slot_share, "gate": gate.to_dict(),
        "note": state.note, "fallback": state.fallback,
        "per_source": {k.split(".", 1)[1]: v for k, v in o.metrics.items()
                       if k.startswith("forgetting_source.")},
        "heldout_per_source": o.heldout_per_source, "version": None, "champion": False,
        "base_version": state.base_version, "heldout_vs_base": o.heldout_vs_base,
        "earlier_replay": state.earlier_budget, "matrix_check": state.matrix_check,
        "retention": [r.to_dict() for r in o.retention],
        "seconds": time.time() - state.started}
    log_comparison(run, state.effective, result["heldout_forgetting"], o.heldout_per_source,
                   controls(tracker, state.task_digest, state.parent_version, state.run_id))
    if state.register:
        result.update(register_release(Registry(tracker), state, gate, say))
    out = end_job(run, kind="release", job_id=state.job_id, result=result)
    # Recorded: the job's checkpoints and model directory are spent (a retry from here on returns
    # the result; before this point it resumes from them).
    shutil.rmtree(state.save_dir, ignore_errors=True)
    shutil.rmtree(state.ckpt_dir, ignore_errors=True)
    return out


STAGES: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("begin", begin), ("warmup", warmup), ("predict", predict), ("train", train), ("finish", finish))
