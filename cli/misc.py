"""`ftctl init`, `ftctl demo`, `ftctl ui`, `ftctl runs …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

runs_app = typer.Typer(help="Runs of the model line in the tracking store.", no_args_is_help=True)


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


@handle_errors
def ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    debug: DebugOpt = False,
) -> None:
    """Serve the MLflow UI on the workspace's tracking store (Ctrl-C to stop)."""
    import os
    import subprocess
    import sys

    s = settings()
    uri = s.resolved_tracking_uri
    if uri.startswith(("http://", "https://")):
        say(f"the tracking store is a server already: open {uri}")
        return
    say(f"MLflow UI on http://{host}:{port} (store {uri})")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--default-artifact-root", s.artifact_root.as_uri(), "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=env))


@runs_app.command("list")
@handle_errors
def runs_list(
    kind: Annotated[str | None, typer.Option(help="stats, release, init or analysis.")] = None,
    status: Annotated[str | None, typer.Option(help="FINISHED, FAILED or RUNNING.")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Jobs of the model line, newest last."""
    from service.tracking.store import TAG, Tracker

    tracker = Tracker(settings())
    filters = {TAG + "role": "job"} | ({TAG + "kind": kind} if kind else {})
    runs = tracker.find_runs(filters, status=status)
    data = [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
             "kind": r.data.tags.get(TAG + "kind"), "task": r.data.tags.get(TAG + "task"),
             "job_id": r.data.tags.get(TAG + "job_id"), "failure": r.data.tags.get(TAG + "failure")}
            for r in runs]
    emit(data, as_json, lambda d: table("runs", ["run", "name", "kind", "status", "task", "failure"], [
        [x["run_id"][:12], x["name"], x["kind"], x["status"], x["task"], x["failure"] or ""] for x in d]))


@runs_app.command("show")
@handle_errors
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id (from `ftctl runs list`).")],
              as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """One run: status, tags, params and metrics."""
    from service.tracking.store import Tracker

    r = Tracker(settings()).get_run(run_id)
    emit({"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
          "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
          "params": r.data.params, "metrics": r.data.metrics}, as_json)
