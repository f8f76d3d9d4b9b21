"""`python -m bench.science [--quick] [--stages ...] [--publish]` — see bench/science/__init__.py."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_text
from forgetting.methods import EVALUATION_ORDER

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("matrix", "lowrank", "prediction", "replay", "budget", "temperature", "cost", "report")
# Every completion method, then the prior approach (similarity alone) and chance level.
PREDICTION_METHODS = (*EVALUATION_ORDER, "semantic_only", "random")
SWEEP_METHODS = ("additive", "knn_pearson", "mf", "als")


@dataclass
class Plan:
    """What one invocation measures; `quick` is the CI smoke, the default is the full study."""

    name: str = "full"
    world: str = "study"
    tasks: int = 0  # statistics tasks; 0 = every task of the world
    seeds: tuple[int, ...] = tuple(range(10))  # prediction seeds (probe draws)
    ks: tuple[int, ...] = (5, 10, 30, 100)
    replay_tasks: int = 10
    replay_seeds: tuple[int, ...] = (0, 1, 2)
    ratios: tuple[float, ...] = (1 / 32, 1 / 8)
    online: tuple[str, ...] = ("additive", "mf", "best")  # "best": the best other method
    offline: tuple[str, ...] = ("additive", "mf", "best")
    # Strategies run at each budget (None: all). The second budget gets the main contrasts only:
    # the full grid at both would double a multi-hour run for no new question.
    ratio_methods: dict[float, set[str]] = field(default_factory=lambda: {
        1 / 8: {"random", "random (online)", "oracle", "mf (online)", "mf (offline)", "best (online)"}})
    # Seeds run at a budget (None: all replay seeds).
    ratio_seeds: dict[float, tuple[int, ...]] = field(default_factory=dict)
    # The investigation: how the sampling temperature shapes predicted and oracle replay (r = 1/32).
    temperatures: tuple[float, ...] = (0.03, 0.3, 1.0)
    sweep_tasks: int = 5
    sweep_seeds: tuple[int, ...] = (0, 1)
    split_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # random test-task splits of the main table
    # The budget curve (the chart a user reads to choose r): held-out forgetting vs r for no
    # replay, random, additive, MF and the oracle, all under one budget rule (docs/replay-budget.md).
    curve_ratios: tuple[float, ...] = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
    curve_strategies: tuple[str, ...] = ("random", "additive", "mf", "oracle")  # + "self", "mix"
    curve_tasks: int = 10
    curve_seeds: tuple[int, ...] = (0,)

    @classmethod
    def core(cls) -> Plan:
        """The full matrix and prediction study with a replay grid that fits about 2.5 hours on
        2 cores: every strategy of the issue at r = 1/32 on 10 tasks x 3 seeds (offline mode
        for MF only), the main contrast (random vs MF online) at r = 1/8 on one seed, and a
        two-temperature sweep on 3 tasks. `full` runs the whole grid (~5 h on 2 cores)."""
        return cls(name="core", offline=("mf",), ratio_methods={1 / 8: {"random", "mf (online)", "oracle"}},
                   ratio_seeds={1 / 8: (0,)}, temperatures=(0.03, 1.0), sweep_tasks=3,
                   sweep_seeds=(0,))

    @classmethod
    def curve(cls) -> Plan:
        """The budget curve on the default world (N = 1,960), sized for about an hour on 2 cores:
        24 statistics tasks, 8 unseen-by-the-release tasks x 1 seed x 5 budgets x 4 strategies."""
        return cls(name="curve", world="default", tasks=24, curve_tasks=8, curve_seeds=(0,))

    @classmethod
    def self_replay(cls) -> Plan:
        """Self-generated vs stored replay on the default world at equal budgets: random, MF,
        the parent's own samples ("self") and half of each ("mix"), at r = 1/32 and 1/8, online,
        8 tasks x 1 seed (+ no replay), the curve's statistics tasks."""
        return cls(name="self", world="default", tasks=24, seeds=(0, 1, 2), ks=(10, 30),
                   curve_tasks=8, curve_seeds=(0,),
                   curve_ratios=(1 / 32, 1 / 8), curve_strategies=("random", "mf", "self", "mix"))

    @classmethod
    def smollm2(cls) -> Plan:
        """The real pretrained model: SmolLM2-135M-Instruct with LoRA on the smollm2-study world
        (N = 1,001): 16 statistics tasks for R² and prediction (3 probe draws x 5 splits), then
        random / additive / MF / the parent's own samples ("self") online at r = 1/8 on 8 of them
        x 2 seeds (+ no replay), then the same at r = 1/32 (the curve's second point), each
        release left out of its own matrix. Cells run one (budget, seed, task) block at a time,
        so a part-finished grid still holds matched comparisons. Sized to the 2-core machine:
        it spans sessions through --ledger."""
        return cls(name="smollm2", world="smollm2-study", tasks=16, seeds=(0, 1, 2), ks=(10, 30),
                   replay_tasks=8, curve_tasks=8, curve_seeds=(0, 1), curve_ratios=(1 / 8, 1 / 32),
                   curve_strategies=("random", "additive", "mf", "self"))

    @classmethod
    def quick(cls) -> Plan:
        return cls(name="quick", world="tiny", tasks=8, seeds=(0,), ks=(5, 10), replay_tasks=2, replay_seeds=(0,),
                   ratios=(1 / 32,), online=("mf",), offline=("mf",), ratio_methods={},
                   temperatures=(1.0,), sweep_tasks=1, sweep_seeds=(0,), curve_ratios=(1 / 32,),
                   curve_strategies=("random", "mf"), curve_tasks=2,  # the replay stage's cells
                   split_seeds=(0, 1))


GRIDS: dict[str, Callable[[], Plan]] = {"full": Plan, "core": Plan.core, "curve": Plan.curve,
                                        "self": Plan.self_replay, "smollm2": Plan.smollm2}


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def family_round_robin(tasks: dict[str, Any], n: int, seed: int = 0) -> list[str]:
    """`n` task names spread over the families: a seeded order within each family, then one
    family after another — deterministic, and no family is left out while another gets two."""
    rng = np.random.default_rng(seed)
    by_family: dict[str, list[str]] = {}
    for name in sorted(tasks):
        by_family.setdefault(tasks[name].family, []).append(name)
    queues = {f: [names[i] for i in rng.permutation(len(names))] for f, names in sorted(by_family.items())}
    out: list[str] = []
    while len(out) < n and any(queues.values()):
        for f in sorted(queues):
            if queues[f] and len(out) < n:
                out.append(queues[f].pop(0))
    return out


class Bench:
    def __init__(self, plan: Plan, workspace: Path, out: Path, workers: int, base_cache: Path,
                 say: Callable[[str], None] = _say, ledger: Path | None = None,
                 model_line: str = "") -> None:
        from service.settings import load_settings

        self.plan, self.out, self.workers, self.say = plan, out, workers, say
        self.ledger = ledger  # bench/science/ledger.py: what survives the machine
        self.base_cache = base_cache
        self.settings = load_settings(overrides={
            "workspace": workspace, "world": plan.world,
            "model_line": model_line or f"ftctl-study-{plan.world}",
            "workers": workers, "tracking_uri": os.environ.get("FTCTL_TRACKING_URI", "")})
        out.mkdir(parents=True, exist_ok=True)
        path = out / "results.json"
        if ledger is not None and (ledger / "results.json").exists() and not path.exists():
            write_text(path, (ledger / "results.json").read_text())
        self.results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    # ---------------------------------------------------------------- helpers
    def save(self) -> None:
        # A resumed grid (--ledger) is measured over several sessions: `dates` keeps every day a
        # result was saved on, so a report never stamps older measurements with today's date.
        prev = self.results.get("meta", {})
        today = date.today().isoformat()
        dates = sorted({*prev.get("dates", [prev["date"]] if "date" in prev else []), today})
        self.results["meta"] = {
            "date": today, "dates": dates, "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
            "world": self.plan.world, "grid": self.plan.name, "workspace": str(self.settings.workspace),
            "model_line": self.settings.model_line, "quick": self.plan.world == "tiny"}
        write_text(self.out / "results.json", json.dumps(self.results, indent=1, default=_jsonable))
        if self.ledger is not None:
            self.ledger.mkdir(parents=True, exist_ok=True)
            write_text(self.ledger / "results.json", (self.out / "results.json").read_text())

    def world(self) -> Any:
        from service.pipeline.inputs import load_world

        return load_world(self.settings)

    def stat_tasks(self) -> list[str]:
        w = self.world()
        return family_round_robin(w.tasks, self.plan.tasks or len(w.tasks))

    def replay_tasks(self) -> list[str]:
        w = self.world()
        stats = set(self.stat_tasks())
        cands = {k: v for k, v in w.tasks.items() if k in stats}
        return family_round_robin(cands, self.plan.replay_tasks, seed=1)

    # ---------------------------------------------------------------- stages
    def matrix(self) -> None:
        from service.pipeline.line import init_line
        from service.pipeline.stats import collect_stats
        from training.world.pretrain import ensure_base_model

        world = self.world()
        base = ensure_base_model(world, self.base_cache)
        if self.ledger is not None:
            from bench.science import ledger

            ledger.restore_cache(self.settings, self.ledger)
        init_line(self.settings, model=Path(base), progress=self.say)
        tasks = self.stat_tasks()
        t0 = time.perf_counter()
        if self.ledger is None:
            res = collect_stats(self.settings, tasks, progress=self.say, workers=self.workers)
        else:  # rows restored, then measured `workers` at a time, each batch saved as it finishes
            from bench.science import ledger

            self.results["ledger"] = ledger.restore(self.settings, self.ledger, self.say)
            todo = [t for t in tasks if not (self.ledger / "rows" / f"{t}.json").exists()]
            for i in range(0, len(todo), self.workers):  # full batches: every worker busy
                collect_stats(self.settings, todo[i : i + self.workers], progress=self.say,
                              workers=self.workers)
                ledger.save(self.settings, self.ledger)
            res = collect_stats(self.settings, tasks, progress=self.say, workers=self.workers)
        failed = [r for r in res if "error" in r]
        self.results["matrix"] = {
            "tasks": len(res) - len(failed), "families": sorted({t.family for t in world.tasks.values()}),
            "examples": len(world.upstream.examples), "sources": world.sources(), "failed": failed,
            "job_seconds_total": float(sum(r.get("seconds", 0.0) for r in res if "error" not in r)),
            "wall_seconds_this_invocation": time.perf_counter() - t0,
            "reused_jobs": sum(bool(r.get("reused")) for r in res), "workers": self.workers}
        if failed:
            raise SystemExit(f"{len(failed)} statistics job(s) failed: {failed}")

    def lowrank(self) -> None:
        from service.pipeline.analysis import analyze, source_table

        got = analyze(self.settings, figure_dir=self.out)
        self.results["lowrank"] = {k: got[k] for k in ("rows", "columns", "report", "null_r2",
                                                       "null_draws", "study_olmo7b_r2",
                                                       "mean_forgetting", "frac_positive")}
        self.results["per_source"] = source_table(self.settings)

    def prediction(self) -> None:
        from service.pipeline.predict import evaluate_methods

        seeds = self.plan.seeds
        runs: dict[str, Any] = {}

        def ev(key: str, methods: tuple[str, ...], **kw: Any) -> None:
            self.say(f"prediction: {key}")
            got = evaluate_methods(self.settings, methods=methods, seeds=seeds, **kw)
            runs[key] = got["report"]
            if "splits" in got:
                runs[key]["splits"] = got["splits"]

        # Five random splits of the test tasks (the first is "main"'s): methods are compared
        # by split, so that a difference one split's tasks decide is not read as a method's.
        ev("main", PREDICTION_METHODS, k=30, split_seeds=self.plan.split_seeds)
        for k in self.plan.ks:
            if k != 30:
                ev(f"k={k}", SWEEP_METHODS, k=k)
        ev("leverage", SWEEP_METHODS, k=30, probe_strategy="leverage")
        ev("family", PREDICTION_METHODS, k=30, split="family")
        self.results["prediction"] = runs

    def best_other(self) -> str:
        """The best completion method by RMSE besides additive and MF (from the prediction stage)."""
        res = self.results.get("prediction", {}).get("main", {}).get("results", {})
        cands = {m: r["metrics"]["rmse_x100"]["mean"] for m, r in res.items()
                 if m not in ("additive", "mf", "random") and not m.startswith("semantic")}
        return min(cands, key=cands.__getitem__) if cands else "knn_pearson"

    def replay(self) -> None:
        from bench.science.grid import plan_cells, run_cells, summarize

        best = self.best_other()
        fix = lambda ms: tuple(dict.fromkeys(best if m == "best" else m for m in ms))  # noqa: E731
        only = {r: {x.replace("best", best, 1) if x.startswith("best") else x for x in labels}
                for r, labels in self.plan.ratio_methods.items()}
        tasks = self.replay_tasks()
        first, second = plan_cells(tasks, self.plan.replay_seeds, self.plan.ratios,
                                   fix(self.plan.online), fix(self.plan.offline), only or None,
                                   self.plan.ratio_seeds or None)
        self.say(f"replay: {len(first) + len(second)} releases over {len(tasks)} tasks "
                 f"({', '.join(tasks)}); best other method: {best}")
        t0 = time.perf_counter()
        total = len(first) + len(second)
        finished: list[dict[str, Any]] = []

        def record(complete: bool) -> None:
            self.results["replay"] = {
                "grid": self.plan.name, "tasks": tasks, "seeds": list(self.plan.replay_seeds),
                "seeds_by_ratio": {f"{r:g}": list(v) for r, v in self.plan.ratio_seeds.items()},
                "ratios": list(self.plan.ratios), "best_other": best, "planned_cells": total,
                "complete": complete, "cells": list(finished),
                "summary": summarize(finished, self.plan.ratios),
                "wall_seconds_this_invocation": time.perf_counter() - t0}

        def done(r: dict[str, Any]) -> None:
            finished.append(r)
            what = r.get("error") or f"held-out ΔNLL {r['heldout_forgetting']:.4f}"
            self.say(f"replay {len(finished)}/{total}: {r['task']} {r['strategy']} {r['mode']} "
                     f"r={r['ratio']:g} seed {r['seed']}: {what}")
            # Saved as it goes: an interrupted multi-hour grid keeps (and reports) what finished;
            # a rerun reuses those releases as finished MLflow jobs.
            record(complete=False)
            self.save()

        run_cells(self.settings, first, self.workers, done)
        run_cells(self.settings, second, self.workers, done)
        record(complete=True)

    def budget(self) -> None:
        """Held-out forgetting vs the replay ratio, every strategy online under one budget rule
        (the oracle has no warm-up); each (task, seed) release is left out of its own matrix."""
        from bench.science.grid import cell_key, curve_cells, curve_summary, run_cells

        tasks = self.replay_tasks()[: self.plan.curve_tasks]
        seeds = self.plan.curve_seeds
        batches = curve_cells(tasks, seeds, self.plan.curve_ratios, self.plan.curve_strategies)
        # Cells a previous invocation finished (this workspace's or the ledger's results.json)
        # are kept as measured, not run again: a release is a fine-tune of minutes to hours.
        kept = [r for r in self.results.get("budget", {}).get("cells", []) if "error" not in r]
        have = {cell_key(r) for r in kept}
        batches = [[c for c in b if cell_key(asdict(c)) not in have] for b in batches]
        todo = sum(len(b) for b in batches)
        self.say(f"budget curve: {todo} releases over {len(tasks)} tasks"
                 + (f" ({len(kept)} kept from an earlier invocation)" if kept else ""))
        finished: list[dict[str, Any]] = list(kept)

        def done(r: dict[str, Any]) -> None:
            if r.get("source", "upstream") != "upstream":  # summarised under its own name
                r = {**r, "strategy": "self" if r["source"] == "self" else "mix"}
            finished.append(r)
            what = r.get("error") or f"held-out ΔNLL {r['heldout_forgetting']:.4f}"
            self.say(f"budget {len(finished)}/{todo + len(kept)}: {r['task']} "
                     f"{r['strategy']} r={r['ratio']:g} seed {r['seed']}: {what}")
            self.results["budget"] = {"tasks": tasks, "seeds": list(seeds),
                                      "ratios": list(self.plan.curve_ratios), "cells": list(finished),
                                      "complete": False}
            self.save()  # an interrupted curve keeps what finished; a rerun reuses those jobs

        for cells in batches:
            run_cells(self.settings, cells, self.workers, done)
        self.results["budget"].update(complete=True,
                                      summary=curve_summary(finished, self.plan.curve_ratios))

    def temperature(self) -> None:
        from bench.science.grid import Cell, run_cells, temperature_summary

        main = self.results.get("replay", {}).get("cells", [])
        if not main:
            raise SystemExit("the temperature stage compares with the replay stage: run it first")
        tasks = self.replay_tasks()[: self.plan.sweep_tasks]
        r = self.plan.ratios[0]
        cells = [Cell(t, s, m, "online", r, temp) for temp in self.plan.temperatures for t in tasks
                 for s in self.plan.sweep_seeds for m in ("mf", "oracle")]
        self.say(f"temperature: {len(cells)} releases, T in {self.plan.temperatures}")
        results = run_cells(self.settings, cells, self.workers)
        self.results["temperature"] = {"tasks": tasks, "seeds": list(self.plan.sweep_seeds),
                                       "ratio": r, "cells": results,
                                       "summary": temperature_summary(results, main, r)}

    def cost(self) -> None:
        from bench.science.cost import probe_cost

        self.results["cost"] = probe_cost(self.settings, self.plan.replay_seeds)

    def report(self) -> None:
        from bench.science.grid import summarize
        from bench.science.report import write_report

        rep = self.results.get("replay")
        if rep and rep.get("cells"):  # from the cells, with this code's summary (a resumed run's too)
            rep["summary"] = summarize(rep["cells"], rep["ratios"])

        write_report(self.results, self.out)
        if self.results.get("budget", {}).get("cells"):
            from bench.science import curve

            write_text(self.out / "budget-curve.md", curve.markdown(self.results))
            curve.figure(self.results, self.out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.science", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny world, few tasks, one seed (CI smoke)")
    p.add_argument("--grid", choices=tuple(GRIDS), default="full",
                   help="full / core: the study world's replay grid (~5 h / ~2.5 h on 2 cores); "
                   "curve: the budget curve on the default world (~1 h; --stages matrix,budget,report); "
                   "self: self-generated vs stored replay (default world); smollm2: SmolLM2-135M "
                   "(--stages matrix,lowrank,prediction,budget)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    p.add_argument("--workspace", type=Path, help="ftctl workspace (default <out>/workspace)")
    p.add_argument("--out", type=Path, help="results folder (default bench/out/science[-quick])")
    p.add_argument("--base-cache", type=Path, default=ROOT / ".ftctl",
                   help="where the world's base model is built or found (shared with `make demo`)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes, one torch thread each")
    p.add_argument("--model-line", default="",
                   help="the workspace's model line (default ftctl-study-WORLD): e.g. the analysis "
                   "stages on bench.chain's workspace (--model-line ftctl-chain-default)")
    p.add_argument("--ledger", type=Path,
                   help="a folder to commit: finished statistics rows, the NLL cache and the results "
                   "are saved there as they finish and restored from it, so a multi-session grid "
                   "resumes on a new machine (bench/science/ledger.py)")
    p.add_argument("--publish", action="store_true",
                   help="copy the results and figures to docs/results/")
    args = p.parse_args(argv)
    plan = Plan.quick() if args.quick else GRIDS[args.grid]()
    name = "science-quick" if args.quick else "science" if args.grid in ("full", "core") else f"science-{args.grid}"
    out = args.out or ROOT / "bench" / "out" / name
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    from service import environment

    environment.apply()
    bench = Bench(plan, args.workspace or out / "workspace", out, args.workers, args.base_cache,
                  ledger=args.ledger, model_line=args.model_line)
    for stage in STAGES:
        if stage in stages:
            t0 = time.perf_counter()
            bench.say(f"stage {stage}")
            getattr(bench, stage)()
            bench.results.setdefault("stage_seconds", {})[stage] = time.perf_counter() - t0
            bench.save()
    if args.publish:
        from bench.science.report import publish

        publish(out, ROOT)
    print(json.dumps({"out": str(out), "stages": stages,
                      "goals": bench.results.get("goals", {})}, default=_jsonable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
