"""Tables, figures and goals from `results.json` — the only source of docs/results/.

`write_report(results, out)` writes `results.md` and the replay / k-sweep figures; `goals(results)`
checks the issue's targets against the measured figures; `publish(out, root)` copies the figures,
`results.md` and `results.json` to docs/results/ (the README quotes its headline figures from
there and links it).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

FIGURES = ("heatmap.png", "r2_by_rank.png", "replay.png", "k_sweep.png")
STUDY_R2 = {1: 0.512, 2: 0.633, 3: 0.715, 4: 0.762, 5: 0.790}


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _ms(m: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    return f"{_f(m['mean'] * scale, digits)} ± {_f(m['std'] * scale, digits)}"


def _p(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.1e}" if x < 1e-3 else f"{x:.3f}"


def _over_budget(summary: dict[str, Any]) -> str:
    """A warning when releases replayed more distinct examples than their budget (runs measured
    before the budget rule of docs/replay-budget.md): compare those only with a matched control."""
    over = sorted({f"{label} at r = {float(b):.4g}" for b, rows in summary.get("budgets", {}).items()
                   for label, r in rows.items() if label != "none"
                   and (r.get("replayed_mean") or 0) > (r.get("budget") or 0) + 0.5})
    if not over:
        return ""
    return (". **Measured before the budget rule** (docs/replay-budget.md): " + ", ".join(over)
            + " replayed more distinct examples than the budget (the warm-up's random draw came on "
            "top), so read those rows against `random (online)`, the control with the same "
            "structure, not against one-draw random.")


def _brief(x: Any) -> str:
    """A goal's detail value, short: floats to 3 significant digits, lists of them too."""
    if isinstance(x, float):
        return f"{x:.3g}"
    if isinstance(x, list | tuple):
        return "[" + ", ".join(_brief(v) for v in x) + "]"
    return str(x)


def _ci(red: float | None, ci: Any) -> str:
    if red is None:
        return "—"
    return f"{100 * red:+.1f}%" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")


def _ci_raw(ci: Any) -> str:
    return f"[{_f(ci[0], 2)}, {_f(ci[1], 2)}]" if ci else ""


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _strategy_order(labels: list[str]) -> list[str]:
    first = ["none", "random", "random (online)"]
    last = ["oracle"]
    mid = sorted(x for x in labels if x not in first + last)
    return [x for x in first if x in labels] + mid + [x for x in last if x in labels]


def best_method(pred: dict[str, Any], exclude: tuple[str, ...] = ("random",)) -> str:
    res = pred["results"]
    return min((m for m in res if m not in exclude), key=lambda m: res[m]["metrics"]["rmse_x100"]["mean"])


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured figure and whether it is met."""
    out: dict[str, Any] = {}
    lr = results.get("lowrank", {}).get("report")
    if lr:
        out["rank3_r2_at_least_0.7"] = {"measured": lr["svd_r2"]["3"], "met": lr["svd_r2"]["3"] >= 0.7}
    pred = results.get("prediction", {}).get("main")
    if pred:
        res = pred["results"]
        best = best_method(pred, ("random", "additive", "semantic", "semantic_only"))
        ratio = res[best]["metrics"]["rmse_x100"]["mean"] / res["additive"]["metrics"]["rmse_x100"]["mean"]
        out["best_rmse_at_most_0.85x_additive"] = {"method": best, "measured": ratio, "met": ratio <= 0.85}
        f1 = res[best]["metrics"]["f1_median"]["mean"]
        out["best_f1_at_least_0.75"] = {"method": best, "measured": f1, "met": f1 >= 0.75}
        for sem in ("semantic_only", "semantic"):  # the prior approach, and it + the example bias
            if sem in res:
                gap = 100 * (f1 - res[sem]["metrics"]["f1_median"]["mean"])
                out[f"f1_20_points_over_{sem}"] = {"measured": gap, "met": gap >= 20}
    rep = results.get("replay", {}).get("summary", {}).get("budgets", {})
    if rep:
        key = min(rep, key=lambda r: float(r))  # the study's budget, 1/32
        rows = rep[key]
        # Each method against its matched control (online: the online random draw), task-level,
        # Holm-adjusted: a reduction that extra replayed examples explain is not counted.
        preds = {}
        for k, v in rows.items():
            if k in ("none", "random", "random (online)", "oracle"):
                continue
            ctl = "random_online" if k.endswith("(online)") and "vs_random_online" in v else "random"
            if f"vs_{ctl}" in v:
                preds[k] = (ctl, v)
        if preds:
            best = max(preds, key=lambda k: preds[k][1][f"reduction_vs_{preds[k][0]}"])
            ctl, row = preds[best]
            vs = row[f"vs_{ctl}"]
            p_adj = vs.get("p_adjusted") if vs.get("p_adjusted") is not None else vs["t_p"]
            out["replay_15pct_below_random_p_0.01"] = {
                "strategy": best, "control": ctl.replace("_", " "), "budget": key,
                "measured": vs["reduction"], "ci": vs["ci"], "n_tasks": vs["n"], "p_holm": p_adj,
                "met": vs["reduction"] >= 0.15 and p_adj < 0.01}
            # Against the oracle (one plan after a plain fine-tune): the offline mode replays the
            # same structure; online methods only where no offline one was run.
            same = {k: v for k, (_, v) in preds.items() if k.endswith("(offline)")} or \
                {k: v for k, (_, v) in preds.items()}
            alike = max(same, key=lambda k: same[k]["reduction_vs_random"])
            share = same[alike].get("share_of_oracle_reduction")
            out["replay_70pct_of_oracle"] = {"strategy": alike, "measured": share,
                                             "ci": same[alike].get("share_of_oracle_ci"),
                                             "met": share is not None and share >= 0.7}
    cost = results.get("cost")
    if cost:
        out["probes_at_most_1pct_of_full"] = {"measured": cost["probe_share_of_full"],
                                              "met": cost["probe_share_of_full"] <= 0.01}
    return out


def _figures(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = results.get("replay", {}).get("summary", {}).get("budgets", {})
    if rep:
        fig, axes = plt.subplots(1, len(rep), figsize=(6 * len(rep), 4), squeeze=False)
        for ax, (budget, rows) in zip(axes[0], sorted(rep.items(), key=lambda kv: -float(kv[0])), strict=True):
            labels = _strategy_order(list(rows))
            means = [rows[x]["heldout_mean"] for x in labels]
            sems = [rows[x]["heldout_std"] / math.sqrt(max(rows[x]["n"], 1)) for x in labels]
            colors = ["#999999" if x in ("none", "random") else "#2b8cbe" if x != "oracle" else "#31a354"
                      for x in labels]
            ax.bar(range(len(labels)), means, yerr=sems, color=colors, capsize=3)
            ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
            ax.set(ylabel="held-out forgetting (mean ΔNLL)", title=f"replay budget r = {float(budget):.4g}")
        fig.tight_layout()
        fig.savefig(out / "replay.png", dpi=120)
        plt.close(fig)
    pred = results.get("prediction", {})
    ks = sorted(int(k.split("=")[1]) for k in pred if k.startswith("k="))
    if ks and "main" in pred:
        ks = sorted({*ks, 30})
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m in pred[f"k={ks[0]}"]["results"]:
            ys = [pred["main" if k == 30 else f"k={k}"]["results"][m]["metrics"]["rmse_x100"]["mean"]
                  for k in ks]
            ax.plot(ks, ys, "o-", label=m)
        ax.set(xscale="log", xlabel="probes k", ylabel="RMSE×100 (unobserved entries)",
               title="completion error vs number of probes")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "k_sweep.png", dpi=120)
        plt.close(fig)


def _splits_table(sp: dict[str, Any]) -> str:
    """The main table repeated over several random test-task splits: mean ± std over splits,
    and each method against the control paired by split."""
    metrics = ("rmse_x100", "roc_auc_median", "precision_at_0.05", "spearman")
    rows = []
    for m, res in sp["results"].items():
        vs = sp["vs_control"].get(m, {})
        rows.append([m, *[_ms(res[k], 1, 3) for k in metrics],
                     _p(vs.get("rmse_x100", {}).get("t_p")) if vs else "(control)"])
    return (f"The same over {len(sp['splits'])} random splits of the test tasks (mean ± std over "
            f"splits; p: paired t-test of RMSE×100 against {sp['control']} over the splits):\n\n"
            + _table(["method", "RMSE×100", "AUC", "P@5%", "Spearman", "p vs " + sp["control"]], rows))


def _prediction_table(rep: dict[str, Any]) -> str:
    rows = []
    for m, r in rep["results"].items():
        x = r["metrics"]
        p10 = x.get("precision_at_0.1", {}).get("mean")
        rows.append([m, _ms(x["rmse_x100"], 1, 2), _f(x["roc_auc_median"]["mean"]), _ms(x["f1_median"]),
                     _f(x["precision_at_0.01"]["mean"]), _f(x["precision_at_0.05"]["mean"]),
                     _f(p10), _f(x["spearman"]["mean"]), _f(r["fold_in_ms"], 2)])
    return _table(["method", "RMSE×100", "AUC (Z>median)", "study's F1 (Z>median; = precision = recall)",
                   "P@1%", "P@5%", "P@10%", "Spearman", "fold-in ms"], rows)


def results_dir(results: dict[str, Any], root: Path) -> Path:
    """Where a run publishes: the study (grids full / core) at docs/results/, any other grid in
    a folder of its own (docs/results/self/, docs/results/smollm2/, ...)."""
    grid = results.get("meta", {}).get("grid") or "full"
    return root / "docs" / "results" / ("" if grid in ("full", "core", "quick") else grid)


def measured_on(meta: dict[str, Any]) -> str:
    """When the results were measured: one day, or the first to the last of a grid that was
    resumed over several sessions (meta["dates"], kept by Bench.save)."""
    dates = meta.get("dates") or ([meta["date"]] if meta.get("date") else [])
    if not dates:
        return "?"
    return dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} (sessions: {', '.join(dates)})"


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    grid = meta.get("grid") or "full"
    # Figure links relative to the published results.md (the study's are repo-root relative).
    fig = "docs/results/" if grid in ("full", "core", "quick") else ""
    how = " --quick" if meta.get("quick") else "" if grid in ("full", "quick") else f" --grid {grid}"
    parts = [f"Measured on {measured_on(meta)} ({meta.get('machine', '?')}), world "
             f"`{meta.get('world', '?')}`, by `python -m bench.science{how}` "
             f"(model line `{meta.get('model_line')}`)."
             + (f" Statistics recomputed from the same measurements on {meta['analysed']} "
                "(`python -m bench.science.report OUT`)." if meta.get("analysed") else "")]
    mx = results.get("matrix")
    if mx:
        parts.append(f"**Matrix.** {mx['tasks']} statistics jobs (tasks from {len(mx['families'])} "
                     f"families) × {mx['examples']:,} upstream examples from {len(mx['sources'])} "
                     f"sources; fine-tune + full measurement took {mx['job_seconds_total'] / 60:.1f} "
                     f"min of job time in total ({mx['workers']} processes × 1 torch thread).")
    lr = results.get("lowrank")
    if lr and lr.get("report"):  # a published budget.json keeps only the null: no table
        r = lr["report"]
        ranks = sorted(int(k) for k in r["svd_r2"])
        parts.append("**Low rank** (truncated SVD, global-mean-centred R², "
                     f"{r['n_rows']} × {r['n_columns_used']}):\n\n" + _table(
                         ["", *[str(k) for k in ranks]],
                         [["ftctl world", *[_f(r["svd_r2"][str(k)]) for k in ranks]],
                          *([["null: columns permuted (mean of "
                              f"{lr.get('null_draws', '?')})",
                              *[_f(lr["null_r2"][str(k)]["null_mean"]) for k in ranks]],
                             ["excess over the null",
                              *[_f(lr["null_r2"][str(k)]["excess"]) for k in ranks]]]
                            if lr.get("null_r2") else []),
                          ["study, OLMo-7B (its null not published)",
                           *[_f(STUDY_R2.get(k)) for k in ranks]]])
                     + f"\n\nAdditive (μ + b_task + b_example) R² {_f(r['additive_r2'])}, "
                     f"multiplicative (rank 1) {_f(r['multiplicative_r2'])}, task-only "
                     f"{_f(r['task_only_r2'])}, example-only {_f(r['example_only_r2'])}. Mean ΔNLL "
                     f"{_f(lr['mean_forgetting'])} nats; {100 * lr['frac_positive']:.1f}% of entries > 0."
                     f"\n\n![forgetting heatmap]({fig}heatmap.png) "
                     f"![R² by rank]({fig}r2_by_rank.png)")
    ps = results.get("per_source")
    if ps:
        srcs = ps["sources"]
        by_family: dict[str, list[dict[str, Any]]] = {}
        for t in ps["tasks"]:
            by_family.setdefault(t["family"], []).append(t)
        picked = [ts[i] for i in range(2) for ts in by_family.values() if i < len(ts)][:12]
        rows = [[t["task"], t["family"], _f(t["mean"]), *[_f(t["per_source"][s]) for s in srcs]]
                for t in sorted(picked, key=lambda t: (t["family"], t["task"]))]
        parts.append("**Which sources a task makes the model forget** (mean ΔNLL per upstream source, "
                     "a task per family and then some):\n\n"
                     + _table(["task", "family", "all", *srcs], rows))
    pred = results.get("prediction", {})
    if "main" in pred:
        cfg = pred["main"]["config"]
        parts.append(f"**Prediction** from k = {cfg['k']} probes, leave-tasks-out "
                     f"({len(pred['main']['folds'][0])} test tasks, seeds "
                     f"{cfg['seeds'][0]}..{cfg['seeds'][-1]}; mean ± std over seeds; scored on "
                     "unobserved entries only):\n\n" + _prediction_table(pred["main"]))
        if pred["main"].get("splits"):
            parts.append(_splits_table(pred["main"]["splits"]))
    sweep = sorted((int(k.split("=")[1]), k) for k in pred if k.startswith("k="))
    if sweep and "main" in pred:
        cols = sorted([*sweep, (30, "main")])
        methods = list(pred[cols[0][1]]["results"])
        rows = [[m, *[f"{_f(pred[key]['results'][m]['metrics']['rmse_x100']['mean'], 2)} / "
                      f"{_f(pred[key]['results'][m]['metrics']['precision_at_0.05']['mean'])}"
                      for _, key in cols]] for m in methods]
        parts.append("**k sweep** (RMSE×100 / P@5%):\n\n" + _table(["method", *[f"k = {k}" for k, _ in cols]], rows)
                     + f"\n\n![k sweep]({fig}k_sweep.png)")
    if "leverage" in pred and "main" in pred:
        rows = [[m, _f(pred["main"]["results"][m]["metrics"]["rmse_x100"]["mean"], 2),
                 _f(pred["leverage"]["results"][m]["metrics"]["rmse_x100"]["mean"], 2),
                 _f(pred["main"]["results"][m]["metrics"]["precision_at_0.05"]["mean"]),
                 _f(pred["leverage"]["results"][m]["metrics"]["precision_at_0.05"]["mean"])]
                for m in pred["leverage"]["results"]]
        parts.append("**Probe choice** (k = 30): random vs leverage (columns with the largest "
                     "factor leverage over the known tasks):\n\n"
                     + _table(["method", "RMSE×100 random", "RMSE×100 leverage", "P@5% random",
                               "P@5% leverage"], rows))
    if "family" in pred:
        parts.append("**Out of domain** (leave one task family out; the study's OOD split):\n\n"
                     + _prediction_table(pred["family"]))
    rep = results.get("replay")
    if rep:
        parts.append(f"**Replay.** {len(rep['tasks'])} unseen tasks ({', '.join(rep['tasks'])}) × seeds "
                     f"{rep['seeds']}; each task released from release 0 with its own row left out of "
                     "the matrix; T = 0.1; scored on the held-out upstream examples, which are never "
                     "replayed. Reductions are 1 − Σ strategy / Σ control over task means (seeds "
                     "averaged within a task), paired t-tests on task means Holm-adjusted over the "
                     "strategies of a budget, 95% bootstrap CIs over tasks; the best other method was "
                     f"`{rep['best_other']}`."
                     + (f" Grid `{rep['grid']}`" if rep.get("grid") else "")
                     + (f"; seeds per budget {rep['seeds_by_ratio']}" if rep.get("seeds_by_ratio") else "")
                     + _over_budget(rep["summary"])
                     + ("" if rep.get("complete", True) else
                        f". **Incomplete**: {len(rep['cells'])} of {rep.get('planned_cells', '?')} "
                        "planned releases finished; the tables cover those"))
        for budget, rows in sorted(rep["summary"]["budgets"].items(), key=lambda kv: -float(kv[0])):
            tab = []
            for label in _strategy_order(list(rows)):
                r = rows[label]
                vs = r.get("vs_random", {})
                red = r.get("reduction_vs_random")
                red2 = r.get("reduction_vs_random_online")
                on = r.get("vs_random_online", {})
                sh = r.get("share_of_oracle_reduction")
                tab.append([label, f"{r['n']} / {r.get('n_tasks', '?')}", r["budget"] if label != "none" else 0,
                            _f(r.get("replayed_mean"), 1) if label != "none" else 0,
                            f"{_f(r['heldout_mean'], 4)} ± {_f(r['heldout_std'], 4)}",
                            _f(r["task_loss_mean"]),
                            "(control)" if label == "random" else _ci(red, vs.get("ci")),
                            f"{r['wins_vs_random']}/{vs.get('n')}" if "wins_vs_random" in r else "—",
                            _p(vs.get("p_adjusted") if vs.get("p_adjusted") is not None else vs.get("t_p")),
                            _p(vs.get("wilcoxon_p")),
                            "—" if red2 is None else f"{_ci(red2, on.get('ci'))} (Holm p {_p(on.get('p_adjusted'))})",
                            "—" if sh is None else f"{_f(sh, 2)} {_ci_raw(r.get('share_of_oracle_ci'))}"])
            parts.append(f"Budget r = {float(budget):.4g} (releases / tasks; tests on task means, "
                         "Holm over the strategies; [95% bootstrap CI over tasks]):\n\n" + _table(
                ["strategy", "n", "plan size", "replayed", "held-out ΔNLL", "task loss", "vs random",
                 "tasks better", "p (Holm)", "Wilcoxon p", "vs random (online)", "share of oracle"], tab))
        if rep["summary"].get("failed"):
            parts.append(f"{len(rep['summary']['failed'])} release(s) failed and are left out: "
                         + "; ".join(f"{f['task']} {f['strategy']}: {f['error'][:80]}" for f in rep["summary"]["failed"]))
        parts.append(f"![replay]({fig}replay.png)")
    temp = results.get("temperature")
    if temp and temp.get("summary"):
        summ = temp["summary"]
        labels = sorted({lab for rows in summ.values() for lab in rows})
        rows = [[f"T = {t}", *[("—" if lab not in summ[t] else
                                f"{100 * summ[t][lab]['reduction_vs_random']:+.1f}% (n={summ[t][lab]['n']})")
                               for lab in labels]] for t in sorted(summ, key=float)]
        parts.append(f"**Sampling temperature** (r = {temp['ratio']:g}, tasks {', '.join(temp['tasks'])}, "
                     f"seeds {temp['seeds']}; held-out forgetting vs one-draw random replay of the same "
                     "pairs):\n\n" + _table(["", *labels], rows))
    cost = results.get("cost")
    if cost:
        parts.append(f"**Probe cost.** Measuring k = {cost['k']} probes took {cost['probe_measure_seconds']:.3f} s "
                     f"and the {cost['method']} fold-in {1000 * cost['fold_in_seconds']:.2f} ms, vs "
                     f"{cost['full_measure_seconds']:.1f} s to measure all {cost['n']:,} upstream examples: "
                     f"{100 * cost['probe_share_of_full']:.2f}% of the full cost.")
    g = results.get("goals")
    if g:
        rows = [[k, ", ".join(f"{a}={_brief(b)}" for a, b in v.items() if a not in ("measured", "met")) or "—",
                 _f(v["measured"]) if isinstance(v.get("measured"), float) else v.get("measured"),
                 "yes" if v["met"] else "**no**"] for k, v in g.items()]
        parts.append("**Goals** (from the issue; figures above):\n\n" + _table(["goal", "detail", "measured", "met"], rows))
    return "\n\n".join(parts) + "\n"


def write_report(results: dict[str, Any], out: Path) -> dict[str, Any]:
    results["goals"] = goals(results)
    _figures(results, out)
    (out / "results.md").write_text(markdown(results))
    return results["goals"]


def publish(out: Path, root: Path) -> None:
    """Copy the figures and results to docs/results/ (the study) or docs/results/<grid>/."""
    import json

    dest = results_dir(json.loads((out / "results.json").read_text()), root)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*FIGURES, "results.json", "results.md", "budget-curve.md", "budget_curve.png"):
        if (out / name).exists():
            shutil.copy2(out / name, dest / name)


def reanalyse(out: Path) -> dict[str, Any]:
    """Recompute every summary of OUT/results.json from its measured cells with this code's
    statistics (the measurement date stays; `meta.analysed` records today's), and rewrite the
    report: a change of statistics never needs the experiment run again."""
    import json
    from datetime import date

    from bench.science.grid import summarize

    results = json.loads((out / "results.json").read_text())
    rep = results.get("replay")
    if rep and rep.get("cells"):
        rep["summary"] = summarize(rep["cells"], rep["ratios"])
    results.setdefault("meta", {})["analysed"] = date.today().isoformat()
    write_report(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.science.report",
                                description=reanalyse.__doc__.split("\n\n")[0] if reanalyse.__doc__ else None)
    p.add_argument("out", type=Path, help="a bench.science output folder (results.json)")
    p.add_argument("--publish", action="store_true", help="then copy it to docs/results/")
    a = p.parse_args(argv)
    reanalyse(a.out)
    if a.publish:
        publish(a.out, Path(__file__).resolve().parents[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
