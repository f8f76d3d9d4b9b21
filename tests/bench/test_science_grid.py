"""The replay grid's shape: which releases each named plan of `bench.science` runs."""

from __future__ import annotations

from collections import Counter

from bench.science.__main__ import Plan
from bench.science.grid import plan_cells


def grid(plan: Plan, tasks: list[str]) -> tuple[list, list]:
    return plan_cells(tasks, plan.replay_seeds, plan.ratios, plan.online,
                      plan.offline, plan.ratio_methods or None, plan.ratio_seeds or None)


def test_full_grid_runs_every_strategy_at_both_budgets_on_every_seed() -> None:
    first, second = grid(Plan(), ["a", "b"])
    assert {(c.task, c.seed) for c in first} == {(t, s) for t in "ab" for s in (0, 1, 2)}
    assert all(c.strategy == "none" for c in first)
    at = Counter((round(1 / c.ratio), c.label) for c in second)
    # 1/32: random (one draw / online), oracle, and additive, mf, best online and offline.
    assert {lbl for (r, lbl) in at if r == 32} == {
        "random", "random (online)", "oracle", "additive (online)", "mf (online)", "best (online)",
        "additive (offline)", "mf (offline)", "best (offline)"}
    assert all(n == 6 for (r, _), n in at.items() if r == 32)  # 2 tasks x 3 seeds
    assert {lbl for (r, lbl) in at if r == 8} == Plan().ratio_methods[1 / 8]


def test_core_grid_limits_the_second_budget_to_its_seeds_and_contrasts() -> None:
    core = Plan.core()
    first, second = grid(core, [f"t{i}" for i in range(10)])
    assert len(first) == 30
    by_ratio = Counter(round(1 / c.ratio) for c in second)
    # 1/32: random, random (online), oracle, 3 online methods, mf offline = 7 x 30 pairs.
    assert by_ratio[32] == 7 * 30
    # 1/8: random, mf online, oracle on seed 0 only: 3 x 10 tasks.
    assert by_ratio[8] == 3 * 10 and {c.seed for c in second if round(1 / c.ratio) == 8} == {0}
    assert {c.label for c in second if round(1 / c.ratio) == 8} == {"random", "mf (online)", "oracle"}
