"""`ftctl forgetting …` (analyze, evaluate, predict) and `ftctl replay recommend`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

app = typer.Typer(help="The forgetting matrix: low-rank analysis, completion quality, predictions.",
                  no_args_is_help=True)
replay_app = typer.Typer(help="Replay recommendations.", no_args_is_help=True)


@app.command("analyze")
@handle_errors
def analyze(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """R² of truncated SVD ranks 1..10 and of the additive / task-only / example-only fits."""
    from service.pipeline.analysis import analyze as _analyze

    emit(_analyze(settings()), as_json, _show)


def _show(r: dict[str, Any]) -> None:
    rep = r["report"]
    rows = [[f"rank {k}", v, r["study_olmo7b_r2"].get(int(k))] for k, v in rep["svd_r2"].items()]
    rows += [["additive", rep["additive_r2"], None], ["multiplicative", rep["multiplicative_r2"], None],
             ["task only", rep["task_only_r2"], None], ["example only", rep["example_only_r2"], None]]
    table(f"forgetting matrix {r['rows']} tasks × {r['columns']} examples: R² by fit",
          ["fit", "R²", "study (OLMo-7B)"], rows)


@app.command("evaluate")
@handle_errors
def evaluate(
    method: Annotated[list[str] | None, typer.Option(help="Method(s) to evaluate, or 'all'. Repeatable.")] = None,
    k: Annotated[int, typer.Option(help="Probes per held-out task.")] = 30,
    seeds: Annotated[int, typer.Option(help="Probe seeds 0..seeds-1.")] = 10,
    split: Annotated[str, typer.Option(help="random (20% of tasks per fold), family (leave one task family out) or loo.")] = "random",
    probe_strategy: Annotated[str, typer.Option(help="random or leverage.")] = "random",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Leave-tasks-out: observe k probes per held-out task, complete its row, score the rest."""
    from forgetting.completion import METHODS
    from service.pipeline.predict import evaluate_methods

    methods = list(METHODS) if not method or "all" in method else method
    r = evaluate_methods(settings(), methods=methods, k=k, seeds=range(seeds), split=split,
                         probe_strategy=probe_strategy)
    emit(r, as_json, _show_eval)


def _show_eval(r: dict[str, Any]) -> None:
    cols = ["rmse_x100", "roc_auc_median", "precision_at_0.05", "spearman"]
    rows = []
    for name, res in r["report"]["results"].items():
        m = res["metrics"]
        rows.append([name, *[f"{m[c]['mean']:.3f} ± {m[c]['std']:.3f}" if c in m else "" for c in cols],
                     f"{res['fold_in_ms']:.2f}"])
    table(f"completion on {r['rows']} tasks × {r['columns']} examples (unobserved entries only)",
          ["method", *cols, "fold-in ms"], rows)


@app.command("predict")
@handle_errors
def predict(
    task: Annotated[str, typer.Argument(help="Embedded task name or task data path.")],
    method: Annotated[str, typer.Option(help="Completion method; default from settings (FTCTL_METHOD).")] = "",
    k: Annotated[int | None, typer.Option(help="Probes to measure; default from settings.")] = None,
    top: Annotated[int, typer.Option(help="How many of the most-forgotten predictions to show.")] = 20,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Predict which upstream examples a task will make the model forget, from k probes."""
    from service.pipeline.predict import predict_task

    s = settings(k=k)
    r = predict_task(s, task, method=method or s.completion_method, top=top, progress=say)
    r.pop("predicted")
    emit(r, as_json, _show_predict)


def _show_predict(r: dict[str, Any]) -> None:
    table(f"{r['task']}: predicted most-forgotten upstream examples ({r['method']}, k={r['k']})",
          ["source", "predicted ΔNLL", "held-out", "text"],
          [[t["source"], t["predicted"], "yes" if t["heldout"] else "", t["text"][:60]] for t in r["top"]])
    if "versus_measured" in r:
        v = r["versus_measured"]
        say(f"versus its measured row: RMSE×100 {v['rmse_x100']:.3f}, Spearman {v['spearman']:.3f}, "
            f"precision@5% {v['precision_at_5pct']:.3f}")


@replay_app.command("recommend")
@handle_errors
def recommend(
    task: Annotated[str, typer.Argument(help="Embedded task name or task data path.")],
    budget: Annotated[int, typer.Option(help="Upstream examples to replay.")] = 10,
    method: Annotated[str, typer.Option(help="Completion method; default from settings (FTCTL_METHOD).")] = "",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which upstream examples to replay while fine-tuning a task (never the held-out set)."""
    from service.pipeline.predict import recommend_replay

    s = settings()
    r = recommend_replay(s, task, method=method or s.completion_method, budget=budget, progress=say)
    emit(r, as_json, lambda d: table(f"replay for {d['task']} ({d['method']}, T={d['temperature']})",
                                     ["example", "source", "predicted ΔNLL", "weight"],
                                     [[x["example_id"], x["source"], x["predicted"], x["weight"]] for x in d["replay"]]))
