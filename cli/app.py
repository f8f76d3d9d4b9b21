"""The `ftctl` command.

Usage::

    ftctl init                      # build the embedded world's base model, register @champion
    ftctl stats collect --all       # grow the forgetting matrix (statistics jobs)
    ftctl forgetting analyze        # how low-rank is it?
    ftctl release new-task wn_noun_food --method mf
    ftctl release list
    ftctl ui                        # the MLflow UI on the workspace store
    ftctl demo                      # all of the above, end to end

Heavy libraries (torch, lightning, mlflow, transformers) are imported inside the commands that need
them, never at module import: `ftctl --help` must answer in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import forgetting as forgetting_cmd
from cli import line, release, runs, stats, worker, world
from cli.common import ROOT_OVERRIDES
from service import environment

environment.apply()  # offline hub, quiet libraries; the commands import heavy libraries later

app = typer.Typer(
    name="ftctl",
    help="Continual fine-tuning without silent forgetting: predict what a new task will make "
    "the model forget, replay exactly that, and release only what passes the forgetting gate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(world.app, name="world")
app.add_typer(stats.app, name="stats")
app.add_typer(forgetting_cmd.app, name="forgetting")
app.add_typer(forgetting_cmd.replay_app, name="replay")
app.add_typer(release.app, name="release")
app.add_typer(runs.runs_app, name="runs")
app.command("init")(line.init)
app.add_typer(line.line_app, name="line")
app.add_typer(line.tasks_app, name="tasks")
app.command("demo")(line.demo)
app.command("ui")(runs.ui)
# The distributed mode (Celery on Redis): workers, the one beat, remote jobs and the inbox.
app.command("worker")(worker.worker)
app.command("scheduler")(worker.scheduler)
app.add_typer(worker.jobs_app, name="jobs")
app.add_typer(worker.inbox_app, name="inbox")


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ftctl {version('ftctl')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
    workspace: Annotated[Path | None, typer.Option(envvar="FTCTL_WORKSPACE",
                                                   help="Workspace directory (default ./.ftctl).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(envvar="FTCTL_TRACKING_URI",
                                                     help="MLflow tracking URI (default: SQLite in the workspace).")] = None,
) -> None:
    """ftctl: continual fine-tuning of language models without silent forgetting."""
    ROOT_OVERRIDES.clear()
    if workspace is not None:
        ROOT_OVERRIDES["workspace"] = workspace
    if tracking_uri:
        ROOT_OVERRIDES["tracking_uri"] = tracking_uri


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
