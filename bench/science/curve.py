"""The report of a `budget` stage (the budget curve, self-generated vs stored replay, the
SmolLM2 replay comparison): `python -m bench.science.curve OUT [--publish]` writes
OUT/budget-curve.md and OUT/budget_curve.png from OUT/results.json by the rules of
forgetting.stats, and with --publish copies them to docs/results/<grid>/ (curve, self, smollm2)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("none", "random", "additive", "mf", "mix", "self", "oracle")


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _p(x: Any) -> str:
    return "—" if x is None or not math.isfinite(x) else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _frac(r: str) -> str:
    return f"1/{round(1 / float(r))}"


def _pct(c: dict[str, Any] | None) -> str:
    """The relative reduction with its CI; "n/a" where the control gains on net (its Σ <= 0:
    forgetting.stats leaves the ratio undefined rather than read a smaller gain as a reduction)."""
    if not c:
        return "—"
    red = c.get("reduction")
    if red is None or not math.isfinite(red):
        return "n/a (control gains)"
    lo, hi = c["ci"]
    return f"{100 * red:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _lower(c: dict[str, Any] | None) -> str:
    return f"{c['wins']}/{c['n']}" if c else "—"


def _diff(c: dict[str, Any] | None) -> str:
    """mean(strategy − control) in nats ×1000 over the tasks, with its 95% bootstrap CI."""
    if not c or c.get("difference") is None:
        return "—"
    lo, hi = c.get("difference_ci") or (float("nan"), float("nan"))
    return f"{1000 * c['difference']:+.2f} [{1000 * lo:+.2f}, {1000 * hi:+.2f}]"


TITLES = {"curve": "The budget curve: held-out forgetting vs the replay ratio",
          "self": "Self-generated vs stored replay at equal budgets",
          "smollm2": "SmolLM2-135M (LoRA): replay against the matched control"}
# What each grid's `Plan` runs (bench/science/__main__.py), as the command that reproduces it.
STAGES = {"curve": "matrix,lowrank,budget", "self": "matrix,lowrank,budget",
          "smollm2": "matrix,lowrank,prediction,budget"}
COMPARISONS = (("mf_vs_additive", "MF against additive (both online): is the task-specific prediction worth it?"),
               ("self_vs_mf", "Self-generated replay against MF's stored replay (Δ < 0: self ends lower)"),
               ("mix_vs_mf", "Half self-generated, half MF against all-MF stored replay"),
               ("self_vs_none", "Self-generated replay against no replay (Δ < 0: self ends lower)"))


def grid_name(results: dict[str, Any]) -> str:
    return str(results.get("meta", {}).get("grid") or "curve")  # runs before the field: the curve


def markdown(results: dict[str, Any]) -> str:
    from bench.science.grid import curve_summary
    from bench.science.report import measured_on

    b = results["budget"]
    summary = curve_summary(b["cells"], b["ratios"])
    meta = results.get("meta", {})
    grid = grid_name(results)
    n_tasks = len(b["tasks"])
    lines = [
        f"# {TITLES.get(grid, grid)}",
        "",
        f"Measured on {measured_on(meta)} ({meta.get('machine', '?')}), world `{meta.get('world')}`, "
        f"by `python -m bench.science --grid {grid} --stages {STAGES.get(grid, 'budget')}` "
        f"({'complete' if b.get('complete') else 'INCOMPLETE: ' + str(len(b['cells'])) + ' releases finished'}). "
        f"{n_tasks} tasks × {len(b['seeds'])} seed(s); every strategy online under one budget rule "
        "(docs/replay-budget.md); held-out ΔNLL = mean over the never-replayed upstream examples, "
        "averaged within a task first (n = tasks). Δ = mean over tasks of (strategy − random) "
        "held-out ΔNLL in millinats (< 0: lower than random), reduction = 1 − Σ strategy / Σ random "
        "(only where random forgets on net: of a gain the ratio would read backwards), each with "
        "its 95% bootstrap interval over tasks; p = paired t-test on task means, Holm-adjusted over "
        "the strategies at that ratio (the no-replay row: unadjusted); lower = tasks where the "
        "strategy's ΔNLL is below random's.",
        "",
        "| r | strategy | n | held-out ΔNLL | task loss after | distinct / budget | slots | Δ vs random, mnats [95% CI] | reduction vs random [95% CI] | p (Holm) | lower | share of oracle [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, table in summary["ratios"].items():
        if table.get("random", {}).get("n", 0) < 2:
            continue  # not measured yet (an incomplete run): no comparison to show
        for name in ORDER:
            row = table.get(name)
            if not row:
                continue
            vs = row.get("vs_random")
            share = row.get("share_of_oracle")
            lines.append(
                f"| {_frac(r)} | {name} | {row['n']} | {_f(row['heldout_mean'], 4)} | "
                f"{_f(row.get('task_after_mean'), 3)} | "
                f"{_f(row.get('distinct_mean'), 1)} / {_f(row.get('budget_mean'), 1)} | "
                f"{_f(row.get('slots_mean'), 0)} | "
                + (f"{_diff(vs)} | {_pct(vs)} | " if name != "random" else "(control) | | ")
                + f"{_p((vs or {}).get('p_adjusted') or (vs or {}).get('t_p'))} | "
                f"{_lower(vs)} | "
                + (f"{_f(share['share'], 2)} [{_f(share['ci'][0], 2)}, {_f(share['ci'][1], 2)}]"
                   if share else "—") + " |")
    for key, title in COMPARISONS:
        rows = [(r, t[key]) for r, t in summary["ratios"].items() if t.get(key)]
        if not rows:
            continue
        lines += ["", f"{title} (paired on task means, unadjusted):", "",
                  "| r | n | Δ, mnats [95% CI] | reduction [95% CI] | p (t-test) | Wilcoxon p | tasks lower |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {_frac(r)} | {c['n']} | {_diff(c)} | {_pct(c)} | {_p(c['t_p'])} | "
                  f"{_p(c['wilcoxon_p'])} | {_lower(c)} |" for r, c in rows]
    if summary["failed"]:
        lines += ["", f"{len(summary['failed'])} release(s) failed and are left out: "
                  + "; ".join(f"{f['task']} {f['strategy']} r={f['ratio']:g}: {f['error'][:80]}"
                              for f in summary["failed"])]
    lines += ["", "![held-out forgetting vs ratio](budget_curve.png)", ""]
    return "\n".join(lines)


def figure(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.science.grid import curve_summary

    b = results["budget"]
    summary = curve_summary(b["cells"], b["ratios"])
    # The ratios the table shows: those with a random control over >= 2 tasks.
    shown = {k: t for k, t in summary["ratios"].items() if t.get("random", {}).get("n", 0) >= 2}
    ratios = [float(r) for r in shown]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ORDER[1:]:
        ys = [shown[k].get(name, {}).get("heldout_mean") for k in shown]
        pts = [(x, y) for x, y in zip(ratios, ys, strict=True) if y is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=name)
    none = next(iter(summary["ratios"].values()))["none"]["heldout_mean"]
    if none is not None:
        ax.axhline(none, color="gray", ls=":", label="no replay")
    ax.set(xscale="log", xlabel="replay ratio r (budget int(|task|·r)+1)",
           ylabel="held-out ΔNLL (task mean)", title="forgetting vs replay budget")
    ax.minorticks_off()  # log-scale minor labels would overprint the fractions
    ax.set_xticks(ratios, [f"1/{round(1 / r)}" for r in ratios])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "budget_curve.png", dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="a bench.science output folder with a budget stage")
    p.add_argument("--publish", action="store_true", help="copy to docs/results/<grid>/")
    p.add_argument("--grid", choices=tuple(TITLES), help="the grid that made OUT (default: from its "
                   "results.json; runs made before the field was recorded say nothing: curve)")
    a = p.parse_args()
    results = json.loads((a.out / "results.json").read_text())
    if a.grid:
        results.setdefault("meta", {})["grid"] = a.grid
    (a.out / "budget-curve.md").write_text(markdown(results))
    figure(results, a.out)
    if a.publish:
        dest = ROOT / "docs" / "results" / grid_name(results)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("budget-curve.md", "budget_curve.png"):
            shutil.copy2(a.out / name, dest / name)
        slim = {"meta": results.get("meta"), "budget": results["budget"],
                "lowrank": {k: results.get("lowrank", {}).get(k) for k in ("rows", "columns", "null_r2")}}
        # The curve's folder holds only this report; another grid's also holds the full
        # bench.science report (results.json, results.md), so the budget's data gets its own name.
        name = "results.json" if grid_name(results) == "curve" else "budget.json"
        (dest / name).write_text(json.dumps(slim, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
