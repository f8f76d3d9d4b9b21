"""bench.nll's goal booleans are computed from its own figures (the bench itself is not a test)."""

from __future__ import annotations

from bench.nll import goals


def result(one, fixed, small, big):
    return {
        "speedup_vs_one_at_a_time": one,
        "speedup_vs_fixed_padding": fixed,
        "evaluator_peak_memory": [{"peak_above_start_mib": small}, {"peak_above_start_mib": big}],
    }


def test_goals():
    g = goals(result(5.0, 3.0, 100.0, 111.0))
    assert g["evaluator_ge_3x_one_at_a_time"] and g["evaluator_ge_3x_fixed_padding"]
    assert g["peak_memory_flat_in_n"] and g["all_met"]  # 111 <= 100 * 1.1 + 2
    g = goals(result(5.0, 2.9, 100.0, 111.0))
    assert not g["evaluator_ge_3x_fixed_padding"] and not g["all_met"]
    g = goals(result(5.0, 4.0, 100.0, 130.0))
    assert not g["peak_memory_flat_in_n"] and g["peak_memory_big_over_small"] == 1.3
    assert not g["all_met"]
    assert goals(result(5.0, 4.0, 0.5, 1.5))["peak_memory_flat_in_n"]  # within the slack
    r = result(5.0, 4.0, 1.0, 1.0)
    assert not goals(r)["sizes_as_in_issue"]
    r["evaluator_peak_memory"][0]["n"], r["evaluator_peak_memory"][1]["n"] = 2000, 20000
    assert goals(r)["sizes_as_in_issue"]
