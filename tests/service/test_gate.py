"""The release gate: absolute held-out budget, optional comparison with random replay, task gain."""

from __future__ import annotations

from service.release.gate import evaluate_gate
from service.settings import Settings

M = {"heldout_forgetting_mean": 0.20}


def test_absolute_budget_and_task_gain() -> None:
    s = Settings(gate_max_heldout_forgetting=0.25)
    assert evaluate_gate(s, M, 5.0, 4.0).passed
    over = evaluate_gate(Settings(gate_max_heldout_forgetting=0.1), M, 5.0, 4.0)
    assert not over.passed and "0.2000 > budget 0.1" in over.reasons[0]
    no_gain = evaluate_gate(s, M, 4.0, 4.5)
    assert not no_gain.passed and "task loss did not improve" in no_gain.reasons[0]
    assert evaluate_gate(Settings(gate_require_task_gain=False), M, 4.0, 4.5).passed
    nan = evaluate_gate(s, {}, 5.0, 4.0)  # nothing measured is never a pass
    assert not nan.passed


def test_relative_to_random_replay() -> None:
    s = Settings(gate_max_relative_to_random=1.0)
    assert evaluate_gate(s, M, 5.0, 4.0, random_baseline=0.21).passed
    worse = evaluate_gate(s, M, 5.0, 4.0, random_baseline=0.19)
    assert not worse.passed and "1 x random replay's 0.1900" in worse.reasons[0]
    missing = evaluate_gate(s, M, 5.0, 4.0, random_baseline=None)
    assert not missing.passed and "--method random" in missing.reasons[0]
    assert evaluate_gate(Settings(), M, 5.0, 4.0, random_baseline=None).passed  # off by default


def test_a_release_over_its_replay_budget_does_not_pass() -> None:
    from service.release.gate import ReplayUse

    s = Settings()
    within = ReplayUse(budget=10, distinct=10, slots=75, slot_share=75 / 2475, ratio=1 / 32)
    assert evaluate_gate(s, M, 5.0, 4.0, replay=within).passed
    more = ReplayUse(budget=10, distinct=17, slots=75, slot_share=75 / 2475, ratio=1 / 32)
    gate = evaluate_gate(s, M, 5.0, 4.0, replay=more)
    assert not gate.passed and "replayed 17 distinct upstream examples > budget 10" in gate.reasons
    hungry = ReplayUse(budget=10, distinct=10, slots=200, slot_share=200 / 2475, ratio=1 / 32)
    gate = evaluate_gate(s, M, 5.0, 4.0, replay=hungry)
    assert not gate.passed and "of the training positions" in gate.reasons[0]
