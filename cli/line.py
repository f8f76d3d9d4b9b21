"""`ftctl init` and `ftctl demo`: create the model line; run the main job end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table


@handle_errors
def init(
    world: Annotated[str, typer.Option(help="Embedded world: default (ftctl's own base model, N = 1,960), study (the same base, N = 3,150), tiny (tests) or smollm2 (a real pretrained LM).")] = "default",
    model: Annotated[Path | None, typer.Option(help="Register this Hugging Face model directory as release 0 instead of the world's base model.")] = None,
    model_line: Annotated[str | None, typer.Option(help="Registered-model name / experiment of this line.")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create the model line: build (once) and register the base model as version 1 @champion."""
    from service.pipeline.line import init_line

    s = settings(world=world, model_line=model_line)
    emit(init_line(s, model_dir=model, progress=say), as_json,
         lambda r: say(f"model line {r['model_line']!r}: @champion = version {r['version']} "
                       f"(world {r['world']})"))


@handle_errors
def demo(
    world: Annotated[str, typer.Option(help="Embedded world to run the demo on.")] = "default",
    tasks: Annotated[int, typer.Option(help="Statistics tasks that build the matrix.")] = 12,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The main job end to end: init, statistics, low-rank analysis, and a new task released with
    predicted replay beside random replay and no replay."""
    from service.release.demo import run_demo

    result = run_demo(settings(world=world), n_stats=tasks, progress=say)
    emit(result, as_json, _show_demo)


def _show_demo(r: dict[str, Any]) -> None:
    rep = r["lowrank"]["report"]
    table("low-rank structure of the forgetting matrix (R², global-mean centred)",
          ["fit", "this world", "study (OLMo-7B)"],
          [[f"rank {k}", rep["svd_r2"][str(k)], r["lowrank"]["study_olmo7b_r2"].get(k)] for k in (1, 2, 3, 4, 5)]
          + [["additive", rep["additive_r2"], None]])
    rows = []
    for res in r["releases"]:
        rows.append([res["method"], res["task_loss_before"], res["task_loss_after"],
                     res["heldout_forgetting"], res["replayed"], res.get("version"),
                     "yes" if res.get("champion") else ""])
    table(f"new task {r['new_task']}: held-out (never replayed) forgetting by strategy",
          ["replay", "task loss before", "after", "held-out ΔNLL", "replayed", "version", "champion"], rows)
    sources = sorted({s for res in r["releases"] for s in res["heldout_per_source"]})
    table("held-out ΔNLL per upstream source", ["source", *[res["method"] for res in r["releases"]]],
          [[s, *[res["heldout_per_source"].get(s) for res in r["releases"]]] for s in sources])
    sec = r.get("seconds", {})
    if sec:
        say(f"demo wall time {sec['total']:.0f} s: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in sec.items() if k != "total"))
    say(f"MLflow UI: run `ftctl ui` and open {r['ui_url']} (experiment {r['model_line']!r})")
