"""`ftctl runs …` and `ftctl ui`: the model line's runs in the tracking store."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

runs_app = typer.Typer(help="Runs of the model line in the tracking store.", no_args_is_help=True)


@handle_errors
def ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    debug: DebugOpt = False,
) -> None:
    """Serve the MLflow UI on the workspace's tracking store (Ctrl-C to stop)."""
    import os
    import subprocess

    from service.tracking.runs import line_link, ui_command

    s = settings()
    cmd = ui_command(s, host, port)
    if cmd is None:
        say(f"the tracking store is a server already: open {s.resolved_tracking_uri}")
        return
    link = line_link(s, f"http://{host}:{port}")
    say(f"MLflow UI on http://{host}:{port} (store {s.resolved_tracking_uri})"
        + (f"; the model line: {link}" if link else ""))
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(subprocess.call(cmd, env=env))


@runs_app.command("list")
@handle_errors
def runs_list(
    kind: Annotated[str | None, typer.Option(help="stats, release, init, measure, refit, analysis or diagnose.")] = None,
    status: Annotated[str | None, typer.Option(help="FINISHED, FAILED or RUNNING.")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Jobs of the model line, newest last."""
    from service.tracking.runs import list_jobs

    data = [r.to_dict() for r in list_jobs(settings(), kind, status)]
    emit(data, as_json, lambda d: table("runs", ["run", "name", "kind", "status", "task", "failure"], [
        [x["run_id"][:12], x["name"], x["kind"], x["status"], x["task"], x["failure"] or ""] for x in d]))


@runs_app.command("show")
@handle_errors
def runs_show(run_id: Annotated[str, typer.Argument(help="Run id (from `ftctl runs list`).")],
              as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """One run: status, tags, params and metrics."""
    from service.tracking.runs import show_run

    emit(show_run(settings(), run_id), as_json)
