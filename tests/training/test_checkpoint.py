"""Resumable fine-tuning: stop after the warm-up, resume later (or after a crash) and end with
exactly the model, replayed ids and history of an uninterrupted run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from training.config import FinetuneConfig
from training.data import Example
from training.finetune import CheckpointSpec, ProbeSpec, ReplaySpec, finetune
from training.upstream import UpstreamSet

from .conftest import tiny_model

UPSTREAM = UpstreamSet.from_texts([f"upstream text number {i}, a b c d e f." for i in range(12)], "up")
TASK = [Example.make(f"what is {i} plus {j}?", f" {i + j}.", "sums") for i in range(5) for j in range(4)]
CFG = FinetuneConfig(lr=5e-3, steps=12, batch_size=4, warmup_steps=2, num_threads=1, max_length=48)
WARMUP = [(i, 1.0) for i in UPSTREAM.ids[:3]]
PLAN = [(i, 1.0) for i in UPSTREAM.ids[6:9]]


def replay(**kw: object) -> ReplaySpec:
    return ReplaySpec(pool=UPSTREAM.as_pool(), schedule=WARMUP, ratio=1 / 2, **kw)  # type: ignore[arg-type]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_stop_and_resume_equals_one_uninterrupted_run(tok, tmp_path: Path) -> None:
    whole = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay())
    ck = CheckpointSpec(str(tmp_path / "ck"), stop_at=5)
    first = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=ck)
    assert first.steps == 5 and len(first.history) == 5 and os.path.isfile(ck.path)
    # A fresh process would rebuild the model from its config: the checkpoint carries the weights.
    # The warm-up delivered twice (its worker died after the checkpoint): no step is trained twice.
    twice = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=ck)
    assert twice.steps == 5 and len(twice.history) == 5 and same_weights(twice.model, first.model)
    rest = finetune(tiny_model(tok, seed=9), tok, TASK, CFG, replay=replay(),
                    checkpoint=CheckpointSpec(ck.dir))
    assert rest.steps == 12 and [h["step"] for h in rest.history] == list(range(1, 13))
    assert rest.replayed_ids == whole.replayed_ids
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in whole.history], abs=1e-5)
    assert same_weights(rest.model, whole.model)
    # Redelivered after it finished: nothing is trained again, the result is the same.
    again = finetune(tiny_model(tok, seed=9), tok, TASK, CFG, replay=replay(),
                     checkpoint=CheckpointSpec(ck.dir))
    assert again.steps == 12 and again.replayed_ids == whole.replayed_ids
    assert same_weights(again.model, whole.model)


def test_a_staged_online_release_equals_the_online_probe_callback(tok, tmp_path: Path) -> None:
    # The callback measures probes after the warm-up and switches the replay plan in one fit; the
    # staged form stops at the same step, and resumes with the plan given as a switch.
    probes = UPSTREAM.examples[9:12]
    seen: dict[str, object] = {}

    def on_probe(ids: list[str], delta: object) -> list[tuple[str, float]]:
        seen["ids"] = ids
        return PLAN

    spec = ProbeSpec(probes, [0.0] * 3, at_fraction=0.25, on_probe=on_probe)
    online = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), probe=spec)
    at = spec.switch_step(CFG.steps)
    ck = CheckpointSpec(str(tmp_path / "ck"), stop_at=at)
    finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=ck)
    staged = finetune(tiny_model(tok), tok, TASK, CFG,
                      replay=replay(switches=[(at * CFG.examples_per_step, PLAN)]),
                      checkpoint=CheckpointSpec(ck.dir))
    assert seen["ids"] == [e.id for e in probes]
    assert staged.replayed_ids == online.replayed_ids
    assert set(PLAN[0][0] for _ in [0]) <= set(staged.replayed_ids)  # the plan was replayed
    assert same_weights(staged.model, online.model)


def test_periodic_checkpoints_let_a_crashed_job_resume(tok, tmp_path: Path) -> None:
    ck = CheckpointSpec(str(tmp_path / "ck"), every_steps=4)

    class Crash(Exception):
        pass

    def die_at_7(step: int, total: int, entry: dict[str, float]) -> None:
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=ck, progress=die_at_7)
    assert torch.load(ck.path, weights_only=False)["global_step"] == 4  # the last periodic one
    resumed = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=ck)
    whole = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay())
    assert resumed.steps == 12 and resumed.replayed_ids == whole.replayed_ids
    assert same_weights(resumed.model, whole.model)


def test_a_changed_plan_never_continues_a_model_trained_on_the_old_one(tok, tmp_path: Path) -> None:
    # A retried online release whose replay plan changed (the matrix grew in between): its own
    # checkpoint past the switch is not resumed; it restarts from the warm-up checkpoint.
    at, per = 3, CFG.examples_per_step
    other = [(i, 1.0) for i in UPSTREAM.ids[3:6]]
    warm = CheckpointSpec(str(tmp_path), name="warmup", stop_at=at)
    finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=warm)

    class Crash(Exception):
        pass

    def die_at_9(step: int, total: int, entry: dict[str, float]) -> None:
        if step == 9:
            raise Crash

    rest = CheckpointSpec(str(tmp_path), every_steps=2, fallback=warm.path)
    with pytest.raises(Crash):
        finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(switches=[(at * per, PLAN)]),
                 checkpoint=rest, progress=die_at_9)
    assert torch.load(rest.path, weights_only=False)["global_step"] == 8
    retried = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(switches=[(at * per, other)]),
                       checkpoint=rest)
    clean = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(switches=[(at * per, other)]))
    assert retried.replayed_ids == clean.replayed_ids and same_weights(retried.model, clean.model)
    # ... while the same plan resumes its own checkpoint at step 10 (its last periodic one).
    same = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(switches=[(at * per, other)]),
                    checkpoint=rest)
    assert same.steps == 12 and same_weights(same.model, clean.model)


def test_a_warm_up_never_resumes_past_where_it_stops_and_accumulation_resumes_exactly(tok, tmp_path: Path) -> None:
    full = CheckpointSpec(str(tmp_path / "a"), name="warmup")
    finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(), checkpoint=full)  # to step 12
    warm = finetune(tiny_model(tok), tok, TASK, CFG, replay=replay(),
                    checkpoint=CheckpointSpec(full.dir, name="warmup", stop_at=4))
    assert warm.steps == 4 and len(warm.history) == 4  # trained afresh, not restored at step 12
    acc = CFG.__class__(**{**CFG.to_dict(), "grad_accum": 2, "lora": None})
    ck = CheckpointSpec(str(tmp_path / "b"), stop_at=5)
    finetune(tiny_model(tok), tok, TASK, acc, replay=replay(), checkpoint=ck)
    resumed = finetune(tiny_model(tok), tok, TASK, acc, replay=replay(), checkpoint=CheckpointSpec(ck.dir))
    whole = finetune(tiny_model(tok), tok, TASK, acc, replay=replay())
    assert resumed.replayed_ids == whole.replayed_ids and same_weights(resumed.model, whole.model)
