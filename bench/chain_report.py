"""The chain and matrix-policy results as a page with figures:

    python -m bench.chain_report [--out bench/out/chain] [--publish]

Reads OUT/results.json (`python -m bench.chain`) and, when present, OUT/matrix_policy.json
(`python -m bench.matrix_policy`), writes OUT/results.md and three figures; `--publish` copies
them with the JSON to docs/results/chain/. Every figure on the page is computed from those files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]


def _f(x: Any, d: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{d}f}"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(str(c) for c in r) + " |" for r in rows]])


def _last_in_every_order(orders: list[list[str]]) -> str:
    last = {o[-1] for o in orders}
    if len(last) == 1:
        return (f"{next(iter(last))} is last in every order, so it has no earlier-task figure "
                "(n = the other tasks). ")
    return ""


def chain_section(res: dict[str, Any]) -> str:
    meta, sm = res["meta"], res["summary"]
    n_links = meta["length"]
    out = [f"## Chains: {n_links} releases × {len(meta['orders'])} task orders per strategy",
           "",
           f"`python -m bench.chain --json --workers 2 --strategies {','.join(sorted(sm['strategies']))}` "
           f"({meta['world']} world, r = {meta['ratio']:g}, {len(meta['stats_tasks'])} statistics rows "
           f"from the base, every link built on the one before it whatever its gate said, nothing "
           "promoted" + (f"; `mf+earlier`: MF with {meta.get('earlier_share', 0.5):g} of each budget "
                         "given to the chain's earlier tasks' train examples"
                         if "mf+earlier" in sm["strategies"] else "")
           + f"). {meta['machine']}, {meta['date']}. "
           f"Orders: " + "; ".join(" → ".join(o) for o in meta["orders"]) + ".",
           "",
           _table(["strategy", "chains", "held-out ΔNLL vs base after the last link",
                   "BWT (−mean earlier-task Δloss)", "mean final task loss"],
                  [[s, v["chains"], _f(v["final_drift_mean"]), _f(v["bwt_mean"]),
                    _f(v["final_loss_mean"])] for s, v in sorted(sm["strategies"].items())]),
           "",
           "Drift and final losses are per chain: n = 2 task orders, no test. "
           + _last_in_every_order(meta["orders"]) +
           "Earlier tasks' test-loss increase at the end of the chain, paired by task (each task's "
           "increase averaged over the orders it was not last in; n = tasks; reduction = 1 − a/b; "
           "95% bootstrap CI over tasks; paired t-test, Holm-adjusted over the comparisons of the "
           "table; Wilcoxon unadjusted):",
           "",
           _table(["a vs b", "n", "mean a", "mean b", "reduction [95% CI]", "a lower on", "t p",
                   "Holm p", "Wilcoxon p"],
                  [[k.replace("_vs_", " vs "), c["n"], _f(c["mean"], 4), _f(c["control_mean"], 4),
                    f"{100 * c['reduction']:+.1f}% [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]",
                    f"{c['wins']}/{c['n']}", f"{c['t_p']:.3g}", f"{c['p_adjusted']:.3g}",
                    f"{c['wilcoxon_p']:.3g}"]
                   for k, c in sm["earlier_task_increase"].items()]),
           "", "![drift](chain_drift.png)", ""]
    if sm["failed"]:
        out += [f"Failed chains: {len(sm['failed'])} — " + "; ".join(
            f"{c['strategy']} order {c['order']}: {c['error']}" for c in sm["failed"]), ""]
    return "\n".join(out)


def policy_section(pol: dict[str, Any]) -> str:
    meta = pol["meta"]
    names = list(pol["depths"][0]["means"]) if pol["depths"] else []
    out = ["## The matrix after a promotion", "",
           f"`python -m bench.matrix_policy --json --workers 2 --depth {len(meta['versions'])} "
           f"--tasks {len(meta['tasks'])}` on the chain workspace: the {len(meta['tasks'])} "
           f"statistics tasks measured again on versions {meta['versions']} (the "
           f"{meta['chain_strategy']} chain, order {meta['chain_order']}: "
           f"{' → '.join(meta['chain_tasks'])}); each task's row on version d predicted from "
           f"k = {meta['k']} of its own entries ({meta['probe_seeds']} probe draws, the same for every "
           "policy) and the other tasks' rows of each policy, its own row left out. "
           f"{meta['machine']}, {meta['date']}.", "",
           "Mean Spearman on the unseen entries (higher = better):", "",
           _table(["depth", "version", *names, "rank corr. of a task's row with its base row"],
                  [[d["depth"], d["version"], *[_f(d["means"][n]["spearman"]) for n in names],
                    _f(d["row_rank_correlation_with_base"]["mean"])] for d in pol["depths"]]),
           "", "How often the matrix check (`forgetting.staleness.probe_check`: the rows predict "
           "held-back probes no better than example means) fired, share of probe draws:", "",
           _table(["depth", *[n for n in names if n != "additive (ancestor)"]],
                  [[d["depth"], *[_f(d["means"][n]["flagged"], 2) for n in names
                                  if n != "additive (ancestor)"]] for d in pol["depths"]]),
           "", "Each policy minus fresh rows, by task (n = tasks; 95% bootstrap CI; paired t-test, "
           "Holm over the policies of a depth):", ""]
    rows = []
    for d in pol["depths"]:
        for name, c in d["vs_fresh"].items():
            sp = c["spearman"]
            rows.append([d["depth"], name, f"{sp['diff']:+.3f} [{sp['ci'][0]:+.3f}, {sp['ci'][1]:+.3f}]",
                         f"{sp['p_holm']:.3g}", f"{c['rmse_x100']['diff']:+.3f}",
                         f"{c['probe_rmse_x100']['diff']:+.3f}"])
    out += [_table(["depth", "policy", "Δ Spearman [95% CI]", "Holm p", "Δ RMSE×100",
                    "Δ probe fit RMSE×100"], rows), "",
            "Cost in statistics jobs per promotion: " + ", ".join(
                f"{k} {v}" for k, v in pol["cost_stats_jobs_per_promotion"].items()) + ".", "",
            "![policy](matrix_policy.png)", ""]
    return "\n".join(out)


def _lines(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
           title: str, path: Path) -> None:
    """One line per name (x, y) — the page's two figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, "o-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures(res: dict[str, Any], pol: dict[str, Any] | None, out: Path) -> None:
    _lines({s: (list(range(1, len(v["drift_by_link"]) + 1)), v["drift_by_link"])
            for s, v in sorted(res["summary"]["strategies"].items())},
           "link (releases since the base)", "held-out ΔNLL vs base (nats)",
           "drift from the base, mean over task orders", out / "chain_drift.png")
    if pol and pol["depths"]:
        depths = [d["depth"] for d in pol["depths"]]
        _lines({n: (depths, [d["means"][n]["spearman"] for d in pol["depths"]])
                for n in pol["depths"][0]["means"]},
               "promotions since the rows were measured (depth)", "Spearman, unseen entries",
               "predicting a later version's rows", out / "matrix_policy.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chain_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "chain")
    p.add_argument("--publish", action="store_true", help="copy to docs/results/chain/")
    a = p.parse_args(argv)
    res = json.loads((a.out / "results.json").read_text())
    from bench.chain import summarize

    res["summary"] = summarize(res["chains"])  # this code's statistics on the measured chains
    write_text(a.out / "results.json", json.dumps(res, indent=1))
    pol_path = a.out / "matrix_policy.json"
    pol = json.loads(pol_path.read_text()) if pol_path.exists() else None
    figures(res, pol, a.out)
    page = ["# Chains of releases on the embedded world", "",
            "What `docs/chains.md` describes, measured. Regenerate: `python -m bench.chain_report "
            "--publish` after the two benches below.", "", chain_section(res)]
    if pol:
        page.append(policy_section(pol))
    write_text(a.out / "results.md", "\n".join(page) + "\n")
    if a.publish:
        dst = ROOT / "docs" / "results" / "chain"
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("results.md", "results.json", "matrix_policy.json", "chain_drift.png", "matrix_policy.png"):
            if (a.out / name).exists():
                shutil.copyfile(a.out / name, dst / name)
    print(a.out / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
