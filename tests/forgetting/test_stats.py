"""Known answers for forgetting.stats: a planted effect is found with an interval around it, a
planted null is not, Holm matches its definition, and the permutation null of R² sits where a
structureless matrix puts it while a planted low-rank matrix stands far above it."""

from __future__ import annotations

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.stats import (
    compare,
    compare_all,
    holm,
    permutation_null_r2,
    share_of_oracle,
    task_means,
)

TASKS = [f"t{i}" for i in range(12)]


def planted(effect: float, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Control ~ task difficulty; the strategy = control x (1 - effect) + small noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, len(TASKS))
    control = {t: float(b) for t, b in zip(TASKS, base, strict=True)}
    strategy = {t: float(b * (1 - effect) + rng.normal(0, 0.02)) for t, b in zip(TASKS, base, strict=True)}
    return strategy, control


def test_task_means_average_seeds_first() -> None:
    got = task_means({("a", 0): 1.0, ("a", 1): 3.0, ("b", 0): 5.0})
    assert got == {"a": 2.0, "b": 5.0}  # n = 2 tasks, not 3 pairs


def test_a_planted_effect_is_found_with_an_interval_around_it() -> None:
    strategy, control = planted(0.10, seed=0)
    c = compare(strategy, control, draws=2000)
    assert c.n == 12 and c.wins >= 10
    assert c.ci[0] < 0.10 < c.ci[1] and abs(c.reduction - 0.10) < 0.03
    assert c.t_p < 1e-4 and c.wilcoxon_p < 0.01


def test_a_gain_is_not_read_as_less_forgetting() -> None:
    """When the control lowers the loss on net (ΔNLL < 0, as a LoRA fine-tune of an instruction
    model does to instruction-style upstream data), a strategy with a smaller gain is worse, not a
    "reduction": the ratio is undefined and the difference in nats carries the effect."""
    control = {t: -0.060 + 0.001 * i for i, t in enumerate(TASKS)}
    smaller_gain = {t: v + 0.002 for t, v in control.items()}  # higher ΔNLL on every task
    c = compare(smaller_gain, control, draws=500)
    assert np.isnan(c.reduction) and c.wins == 0
    assert c.difference == pytest.approx(0.002)
    assert c.difference_ci[0] == pytest.approx(0.002) and c.difference_ci[1] == pytest.approx(0.002)
    # With forgetting the difference agrees in sign with the reduction.
    strategy, forgets = planted(0.10, seed=0)
    d = compare(strategy, forgets, draws=500)
    assert d.reduction > 0 > d.difference and d.difference_ci[1] < 0
    assert d.to_dict()["difference_ci"] == list(d.difference_ci)


def test_a_planted_null_is_not_found() -> None:
    found = 0
    for seed in range(40):
        strategy, control = planted(0.0, seed)
        c = compare(strategy, control, draws=500)
        found += c.t_p < 0.05
        if seed < 5:
            assert c.ci[0] < 0 < c.ci[1]
    assert found <= 6  # about 5% of 40 by chance; 6 allows the binomial spread


def test_holm_by_its_definition() -> None:
    got = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1, monotone: 0.03, 0.06, 0.06
    assert got == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.9, "y": 0.8}) == {"x": 1.0, "y": 1.0}


def test_compare_all_adjusts_over_the_strategies() -> None:
    strong, control = planted(0.2, 1)
    weak, _ = planted(0.0, 1)
    got = compare_all({"strong": strong, "weak": weak}, control)
    assert got["strong"].p_adjusted == pytest.approx(min(1.0, 2 * got["strong"].t_p))
    assert got["weak"].p_adjusted >= got["weak"].t_p


def test_share_of_oracle_is_a_ratio_of_reductions() -> None:
    control = {t: 1.0 for t in TASKS}
    oracle = {t: 0.6 for t in TASKS}
    half = {t: 0.8 for t in TASKS}
    got = share_of_oracle(half, control, oracle, draws=500)
    assert got["share"] == pytest.approx(0.5) and got["ci"] == pytest.approx([0.5, 0.5])


def test_r2_null_of_a_structureless_matrix_is_the_matrix_itself() -> None:
    z = np.random.default_rng(0).standard_normal((30, 400))
    got = permutation_null_r2(z, ranks=(1, 5), draws=10)
    for r in (1, 5):  # iid noise is its own null: no excess
        assert abs(got[r]["excess"]) < 3 * got[r]["null_std"] + 0.01
    assert 0.1 < got[5]["null_mean"] < 0.25  # 30 rows: five components take ~1/6 of the noise


def test_r2_of_a_planted_low_rank_matrix_stands_above_its_null() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 400)) + 0.3 * rng.standard_normal((30, 400))
    got = permutation_null_r2(z, ranks=(2,), draws=10)
    assert got[2]["r2"] > 0.85 and got[2]["excess"] > 0.6


def test_too_little_data_is_refused() -> None:
    with pytest.raises(ForgettingError):
        compare({"a": 1.0}, {"a": 2.0})
    with pytest.raises(ForgettingError):
        permutation_null_r2(np.ones((1, 5)), ranks=(1,))
