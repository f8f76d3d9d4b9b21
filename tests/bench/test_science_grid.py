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


def test_curve_without_oracle_runs_matched_blocks_so_a_partial_grid_compares_like_with_like() -> None:
    from bench.science.grid import curve_cells

    plan = Plan.smollm2()
    tasks, seeds = ["a", "b", "c"], plan.curve_seeds
    (cells,) = curve_cells(tasks, seeds, plan.curve_ratios, plan.curve_strategies)
    names = [c.source if c.source != "upstream" else c.strategy for c in cells]
    per_block = 1 + len(plan.curve_strategies)  # no replay + each strategy at the first budget
    # The first (budget, seed, task) block is complete before the second starts, none first.
    assert names[:per_block] == ["none", *plan.curve_strategies]
    assert {(c.task, c.seed, c.ratio) for c in cells[:per_block]} == {("a", seeds[0], plan.curve_ratios[0])}
    # Every cell exactly once; the later budget only after the first one's cells.
    assert len(cells) == len({(c.task, c.seed, c.strategy, c.source, c.ratio) for c in cells})
    assert len(cells) == len(tasks) * len(seeds) * (1 + len(plan.curve_strategies) * len(plan.curve_ratios))
    first_late = next(i for i, c in enumerate(cells) if c.ratio != plan.curve_ratios[0])
    assert all(c.ratio == plan.curve_ratios[0] for c in cells[:first_late])
    assert all(c.ratio != plan.curve_ratios[0] for c in cells[first_late:])
    assert not any(c.full_row for c in cells if c.strategy == "none")  # nothing needs the full row


def test_curve_with_oracle_measures_the_full_no_replay_rows_first() -> None:
    from bench.science.grid import curve_cells

    plan = Plan.curve()
    first, second = curve_cells(["a", "b"], (0,), plan.curve_ratios, plan.curve_strategies)
    assert {c.strategy for c in first} == {"none"} and all(c.full_row for c in first)
    assert Counter(c.strategy for c in second)["oracle"] == 2 * len(plan.curve_ratios)
