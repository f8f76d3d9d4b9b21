"""The replay mixture: exact replay counts and spacing, held-out refusal, weights, switching."""

from __future__ import annotations

import math

import pytest

from training.data import Example
from training.errors import TrainingError
from training.mixture import ReplayMixture, count_replay_slots

TASK = [Example.make(f"task {i}", f" answer {i}") for i in range(40)]
POOL = {e.id: e for e in (Example.text(f"upstream {i}", "kjv") for i in range(30))}
IDS = list(POOL)
HELDOUT = frozenset(IDS[20:])


def fake_encode(e: Example) -> tuple[list[int], list[int]]:
    n = 3 + len(e.response) % 5
    return list(range(1, n + 1)), [-100, *list(range(2, n + 1))]


def mixture(ratio=1 / 32, schedule=None, **kw):
    schedule = [(i, 1.0) for i in IDS[:20]] if schedule is None else schedule
    return ReplayMixture(
        TASK,
        fake_encode,
        pad_id=0,
        ratio=ratio,
        pool=POOL,
        schedule=schedule,
        exclude_ids=HELDOUT,
        **kw,
    )


def consume(mix, total, batch_size=7):
    for p0 in range(0, total, batch_size):
        mix.collate(list(range(p0, min(total, p0 + batch_size))))


@pytest.mark.parametrize(
    ("ratio", "total"), [(1 / 32, 1000), (1 / 8, 333), (0.5, 99), (1.0, 64), (0.03125, 32)]
)
def test_exact_replay_count_and_spacing(ratio, total):
    mix = mixture(ratio)
    consume(mix, total)
    assert (
        len(mix.consumed)
        == count_replay_slots(total, ratio)
        == math.floor(total * ratio / (1 + ratio))
    )
    assert not set(mix.consumed) & HELDOUT
    if ratio == 1 / 32:  # 32 task examples, then one replay: positions 32, 65, 98, ...
        assert [p for p in range(200) if mix.is_replay(p)] == [32, 65, 98, 131, 164, 197]


def test_task_epochs_cover_every_example_and_batches_are_padded():
    mix = mixture(ratio=0.0, schedule=[])
    seen = []
    for p in range(40):
        uid, enc = mix.example_at(p)
        assert uid is None
        seen.append(tuple(enc[0]))
    batch = mix.collate([0, 1, 2, 3])
    w = batch["input_ids"].shape[1]
    assert batch["attention_mask"].sum(1).tolist() == [
        len(mix.example_at(p)[1][0]) for p in range(4)
    ]
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all() and w == max(
        batch["attention_mask"].sum(1)
    )
    assert batch["n_replay"] == 0


def test_each_pass_replays_every_scheduled_id_once_and_zero_weight_never():
    sched = [(i, 1.0) for i in IDS[:10]] + [(IDS[10], 0.0)]
    mix = mixture(ratio=1.0, schedule=sched)
    consume(mix, 40)  # 20 replay slots = 2 passes over 10 ids
    assert sorted(mix.consumed[:10]) == sorted(IDS[:10]) == sorted(mix.consumed[10:])
    assert IDS[10] not in mix.consumed


def test_heavy_weights_come_first_in_a_pass():
    sched = [(IDS[0], 1000.0)] + [(i, 1.0) for i in IDS[1:20]]
    firsts = [mixture(ratio=1.0, schedule=sched, seed=s).replay_id_at(0) for s in range(20)]
    assert firsts.count(IDS[0]) >= 17  # P = 1000/1019 per seed


def test_refusals():
    with pytest.raises(TrainingError, match=r"held-out example .* never be replayed"):
        mixture(schedule=[(IDS[25], 1.0)])
    with pytest.raises(TrainingError, match=r"not in the replay pool"):
        mixture(schedule=[("nope", 1.0)])
    with pytest.raises(TrainingError, match=r"no positive weight"):
        mixture(schedule=[(IDS[0], 0.0)])
    with pytest.raises(TrainingError, match=r"finite and >= 0"):
        mixture(schedule=[(IDS[0], -1.0)])
    with pytest.raises(TrainingError, match=r"twice"):
        mixture(schedule=[(IDS[0], 1.0), (IDS[0], 2.0)])
    with pytest.raises(TrainingError, match=r"empty schedule"):
        mixture(schedule=[])
    with pytest.raises(TrainingError, match=r"no task examples"):
        ReplayMixture([], fake_encode, pad_id=0)
    mix = mixture()
    with pytest.raises(TrainingError, match=r"held-out"):
        mix.switch([(IDS[29], 1.0)], at_position=10)


def test_switch_takes_effect_at_the_position():
    mix = mixture(ratio=0.25, schedule=[(i, 1.0) for i in IDS[:5]])
    consume(mix, 50, batch_size=10)  # positions 0..49: 10 replay slots
    mix.switch([(i, 1.0) for i in IDS[10:15]], at_position=50)
    consume_from = 50
    for p0 in range(consume_from, 100, 10):
        mix.collate(list(range(p0, p0 + 10)))
    assert len(mix.consumed) == count_replay_slots(100, 0.25) == 20
    assert set(mix.consumed[:10]) <= set(IDS[:5]) and set(mix.consumed[10:]) <= set(IDS[10:15])
    assert mix.schedule_ids == tuple(IDS[10:15])


def test_deterministic_under_seed():
    a, b, c = mixture(ratio=0.5, seed=1), mixture(ratio=0.5, seed=1), mixture(ratio=0.5, seed=2)
    for m in (a, b, c):
        consume(m, 60)
    assert a.consumed == b.consumed != c.consumed


def test_a_held_out_id_among_valid_ones_is_refused_and_the_old_schedule_stays():
    mix = mixture(ratio=0.5)
    consume(mix, 30)
    before = list(mix.consumed)
    offered = [(i, 1.0) for i in IDS[:5]] + [(IDS[20], 0.0)]  # even with weight 0
    with pytest.raises(TrainingError, match=rf"held-out example {IDS[20]}"):
        mix.switch(offered, at_position=30)
    with pytest.raises(TrainingError, match=r"held-out"):
        mixture(schedule=[(i, 1.0) for i in IDS])  # the whole pool, held-out part included
    assert mix.schedule_ids == tuple(IDS[:20]) and mix.consumed == before
    consume(mix, 90)
    assert mix.consumed and not set(mix.consumed) & HELDOUT
