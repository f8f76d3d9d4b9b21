"""The budget curve's report: `python -m bench.science.curve OUT [--publish]` writes
OUT/budget-curve.md and OUT/budget_curve.png from OUT/results.json (the `budget` stage), by the
rules of forgetting.stats, and with --publish copies them to docs/results/curve/."""

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
    if not c:
        return "—"
    lo, hi = c["ci"]
    return f"{100 * c['reduction']:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def markdown(results: dict[str, Any]) -> str:
    from bench.science.grid import curve_summary

    b = results["budget"]
    summary = curve_summary(b["cells"], b["ratios"])
    meta = results.get("meta", {})
    n_tasks = len(b["tasks"])
    lines = [
        "# The budget curve: held-out forgetting vs the replay ratio",
        "",
        f"Measured {meta.get('date', '?')} on {meta.get('machine', '?')}, world `{meta.get('world')}`, "
        f"by `python -m bench.science --grid curve --stages matrix,lowrank,budget` "
        f"({'complete' if b.get('complete') else 'INCOMPLETE: ' + str(len(b['cells'])) + ' releases finished'}). "
        f"{n_tasks} tasks × {len(b['seeds'])} seed(s); every strategy online under one budget rule "
        "(docs/replay-budget.md); held-out ΔNLL = mean over the never-replayed upstream examples, "
        "averaged within a task first (n = tasks). Reduction = 1 − Σ strategy / Σ random over the "
        "tasks, with its 95% bootstrap interval over tasks; p = paired t-test on task means, "
        "Holm-adjusted over the strategies at that ratio (the no-replay row: unadjusted).",
        "",
        "| r | strategy | n | held-out ΔNLL | distinct / budget | slots | vs random [95% CI] | p (Holm) | share of oracle [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, table in summary["ratios"].items():
        if "random" not in table:
            continue  # not measured yet (an incomplete run)
        for name in ORDER:
            row = table.get(name)
            if not row:
                continue
            vs = row.get("vs_random")
            share = row.get("share_of_oracle")
            lines.append(
                f"| {_frac(r)} | {name} | {row['n']} | {_f(row['heldout_mean'], 4)} | "
                f"{_f(row.get('distinct_mean'), 1)} / {_f(row.get('budget_mean'), 1)} | "
                f"{_f(row.get('slots_mean'), 0)} | {_pct(vs) if name != 'random' else '(control)'} | "
                f"{_p((vs or {}).get('p_adjusted') or (vs or {}).get('t_p'))} | "
                + (f"{_f(share['share'], 2)} [{_f(share['ci'][0], 2)}, {_f(share['ci'][1], 2)}]"
                   if share else "—") + " |")
    lines += ["", "MF against additive (both online; is the task-specific prediction worth it?):", "",
              "| r | n | reduction vs additive [95% CI] | p (t-test) | Wilcoxon p | tasks MF better |",
              "|---|---|---|---|---|---|"]
    for r, table in summary["ratios"].items():
        c = table.get("mf_vs_additive")
        if c:
            lines.append(f"| {_frac(r)} | {c['n']} | {_pct(c)} | {_p(c['t_p'])} | {_p(c['wilcoxon_p'])} | "
                         f"{c['wins']}/{c['n']} |")
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
    ratios = [float(r) for r in summary["ratios"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ORDER[1:]:
        ys = [summary["ratios"][k].get(name, {}).get("heldout_mean") for k in summary["ratios"]]
        pts = [(x, y) for x, y in zip(ratios, ys, strict=True) if y is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=name)
    none = summary["ratios"][next(iter(summary["ratios"]))]["none"]["heldout_mean"]
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
    p.add_argument("out", type=Path, help="the bench.science --grid curve output folder")
    p.add_argument("--publish", action="store_true", help="copy to docs/results/curve/")
    a = p.parse_args()
    results = json.loads((a.out / "results.json").read_text())
    (a.out / "budget-curve.md").write_text(markdown(results))
    figure(results, a.out)
    if a.publish:
        dest = ROOT / "docs" / "results" / "curve"
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("budget-curve.md", "budget_curve.png"):
            shutil.copy2(a.out / name, dest / name)
        slim = {"meta": results.get("meta"), "budget": results["budget"],
                "lowrank": {k: results.get("lowrank", {}).get(k) for k in ("rows", "columns", "null_r2")}}
        (dest / "results.json").write_text(json.dumps(slim, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
