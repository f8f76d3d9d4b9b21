"""`ftctl stats collect`: full forgetting rows (statistics jobs) that grow the matrix."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

app = typer.Typer(help="Statistics jobs: fine-tune without replay, measure every upstream example.",
                  no_args_is_help=True)


@app.command("collect")
@handle_errors
def collect(
    tasks: Annotated[list[str] | None, typer.Argument(help="Embedded task names or task data paths.")] = None,
    all_tasks: Annotated[bool, typer.Option("--all", help="Every task of the line's catalogue (`ftctl tasks list`).")] = False,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (one torch thread each); default from settings.")] = None,
    steps: Annotated[int | None, typer.Option(help="Fine-tuning steps per task; default from settings.")] = None,
    remote: Annotated[bool, typer.Option(help="Submit one job per task to the Celery workers (FTCTL_BROKER_URL).")] = False,
    shards: Annotated[int, typer.Option(help="With --remote: split each row's measurement across this many gpu workers.")] = 1,
    wait: Annotated[bool, typer.Option(help="With --remote: follow the jobs until they end.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Collect one full row of the forgetting matrix per task (finished tasks are reused)."""
    from service.errors import ServiceError
    from service.pipeline.inputs import catalogue
    from service.pipeline.stats import collect_stats

    s = settings(steps=steps)
    refs = list(tasks or [])
    if all_tasks:
        refs += [t for t in catalogue(s) if t not in refs]
    if not refs:
        raise ServiceError("no task given; name tasks (see `ftctl tasks list`) or pass --all")
    if (shards != 1 or wait) and not remote:
        raise typer.BadParameter("--shards and --wait are for remote jobs; add --remote")
    if remote:
        from service.dist.client import RemoteJobs

        jobs = RemoteJobs(s)
        submitted = [jobs.submit_stats(ref, shards=shards) for ref in refs]
        results = [jobs.wait(j["job_id"], progress=say) for j in submitted] if wait else submitted
        emit(results, as_json, _show if wait else lambda rs: [say(
            f"submitted {r['job_id']} ({'new' if r['submitted'] else 'already queued'})") for r in rs])
        return
    results = collect_stats(s, refs, progress=say, workers=workers)
    emit(results, as_json, _show)
    if any("error" in r for r in results):
        raise typer.Exit(1)


def _show(results: list[dict[str, Any]]) -> None:
    table("statistics rows", ["task", "task loss before → after", "mean ΔNLL", "status"], [
        [r["task"], f"{r['task_loss_before']:.3f} → {r['task_loss_after']:.3f}" if "error" not in r else "",
         r.get("forgetting_mean"), "reused" if r.get("reused") else ("FAILED: " + r["error"] if "error" in r else "new")]
        for r in results])
