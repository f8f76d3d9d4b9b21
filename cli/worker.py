"""`ftctl worker`, `ftctl scheduler`, `ftctl jobs …`, `ftctl inbox …`: the distributed mode.

Usage::

    ftctl worker --queue gpu --gpu 0     # one per GPU (solo pool, CUDA_VISIBLE_DEVICES=0)
    ftctl worker --queue cpu             # prefork, one torch/BLAS thread per child
    ftctl scheduler                      # Celery beat; refuses to start while another one runs
    ftctl jobs list | show ID | cancel ID | retry ID | diagnose | measure
    ftctl inbox add DATA                 # a dataset or task name for the next scheduled release

All need FTCTL_BROKER_URL (redis://:PASSWORD@host:6379/0).
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

jobs_app = typer.Typer(help="Remote jobs on the Celery workers: list, show, cancel, retry.",
                       no_args_is_help=True)
inbox_app = typer.Typer(help="The inbox of task datasets that the scheduler turns into releases.",
                        no_args_is_help=True)

# A prefork child must not inherit a multi-threaded OpenMP runtime (deadlock after fork) and two
# children × N threads on N cores thrash: one thread each (measured, docs/operations.md).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def worker_argv(queue: str, queue_name: str, gpu: int | None, concurrency: int | None,
                loglevel: str) -> tuple[list[str], dict[str, str]]:
    """The celery worker argv and the env vars for a gpu or cpu worker (pure: tested)."""
    host = socket.gethostname()
    if queue == "gpu":
        env = {"CUDA_VISIBLE_DEVICES": str(gpu if gpu is not None else 0)}
        # solo: the task runs in the worker process itself; torch/CUDA after fork deadlocks.
        argv = ["worker", "-Q", queue_name, "--pool", "solo", "--concurrency", "1",
                "-n", f"gpu{env['CUDA_VISIBLE_DEVICES']}-{os.getpid()}@{host}"]
    elif queue == "cpu":
        env = dict(ONE_THREAD)
        argv = ["worker", "-Q", queue_name, "--pool", "prefork",
                "--concurrency", str(concurrency or os.cpu_count() or 1), "-n", f"cpu-{os.getpid()}@{host}"]
    else:
        raise typer.BadParameter(f"unknown queue {queue!r}; use gpu or cpu")
    return [*argv, "--loglevel", loglevel, "--without-mingle", "--without-gossip"], env


@handle_errors
def worker(
    queue: Annotated[str, typer.Option(help="gpu (fine-tuning, NLL measurement) or cpu (completion, registry, scheduling).")] = "cpu",
    gpu: Annotated[int | None, typer.Option(help="GPU index for a gpu worker (sets CUDA_VISIBLE_DEVICES); start one worker per GPU.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="cpu workers: child processes (default: CPU count).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    debug: DebugOpt = False,
) -> None:
    """Run a Celery worker on the gpu or cpu queue with the right pool and thread settings."""
    from service.dist.app import make_app
    from service.dist.store import JobStore  # noqa: F401  (fail now if redis is missing)

    s = settings()
    argv, env = worker_argv(queue, "", gpu, concurrency, loglevel)
    os.environ.update(env)  # before anything imports torch
    app = make_app(s)
    argv[2] = app.ftctl_dist.queue(queue)
    if queue == "cpu":
        from celery.signals import worker_process_init

        worker_process_init.connect(_one_torch_thread, weak=False)
    say(f"ftctl worker: queue {argv[2]}, pool {argv[4]}, broker {_safe(s.broker_url)}")
    app.worker_main(argv)


def _one_torch_thread(**_: Any) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@handle_errors
def scheduler(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    debug: DebugOpt = False,
) -> None:
    """Run Celery beat (inbox, statistics and refit schedules). Exactly one per deployment:
    a second scheduler refuses to start while the first holds the lock in Redis."""
    from service.dist.app import run_scheduler

    run_scheduler(settings(), loglevel, say)


def _jobs() -> Any:
    from service.dist.client import RemoteJobs

    return RemoteJobs(settings())


@jobs_app.command("list")
@handle_errors
def jobs_list(limit: Annotated[int, typer.Option(help="Most recent jobs to show.")] = 50,
              as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Recent jobs with their state and last progress message."""
    rows = _jobs().list(limit)
    emit(rows, as_json, lambda rs: table("jobs", ["job", "kind", "state", "worker", "message"], [
        [r["job_id"], r["kind"], r["state"], r.get("worker"), r.get("error") or r.get("message")]
        for r in rs]))


@jobs_app.command("show")
@handle_errors
def jobs_show(job_id: Annotated[str, typer.Argument(help="Job id (from submit or `jobs list`).")],
              as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """One job: arguments, state, progress, result or error."""
    emit(_jobs().show(job_id), as_json)


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="Job id.")],
                as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Cancel a job: a queued job never starts, a running one stops at its next progress step."""
    r = _jobs().cancel(job_id)
    emit(r, as_json, lambda r: say(f"{job_id}: {'cancelled' if r['cancelled'] else 'already ' + r['state']}"))


@jobs_app.command("retry")
@handle_errors
def jobs_retry(job_id: Annotated[str, typer.Argument(help="Job id of a failed or cancelled job.")],
               wait: Annotated[bool, typer.Option(help="Follow progress until done.")] = False,
               as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Resubmit a failed or cancelled job with the same arguments."""
    follow(_jobs(), _jobs().retry(job_id), wait, as_json)


@jobs_app.command("diagnose")
@handle_errors
def jobs_diagnose(queue: Annotated[str, typer.Option(help="Queue to test: gpu or cpu.")] = "gpu",
                  seconds: Annotated[float, typer.Option(help="Duration of the job.")] = 1.0,
                  wait: Annotated[bool, typer.Option(help="Follow progress until done.")] = True,
                  as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Check a deployment end to end: a small job through broker, worker, lock and MLflow."""
    jobs = _jobs()
    follow(jobs, jobs.submit_diagnose(seconds=seconds, steps=5, queue=queue), wait, as_json)


@jobs_app.command("measure")
@handle_errors
def jobs_measure(version: Annotated[int, typer.Option(help="Version to measure (0 = @champion).")] = 0,
                 shards: Annotated[int, typer.Option(help="Shards spread over the gpu workers.")] = 2,
                 wait: Annotated[bool, typer.Option(help="Follow progress until done.")] = False,
                 as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Measure a version's NLL on every upstream example, sharded across gpu workers."""
    jobs = _jobs()
    follow(jobs, jobs.submit_measure(version, shards), wait, as_json)


def follow(jobs: Any, job: dict[str, Any], wait: bool, as_json: bool) -> None:
    """Print the submitted job id, or follow it to the end with --wait (what --remote uses)."""
    if not wait:
        emit({k: job.get(k) for k in ("job_id", "kind", "state", "submitted", "task_id")}, as_json,
             lambda j: say(f"job {j['job_id']} ({j['kind']}) "
                           + ("submitted" if j["submitted"] else f"already exists: {j['state']}")
                           + f"; follow it with `ftctl jobs show {j['job_id']}`"))
        return
    result = jobs.wait(job["job_id"], progress=say)
    emit({"job_id": job["job_id"], **result}, as_json)


def remote_release_runner(as_json: bool, app: Any = None) -> Any:
    """One release on the workers, to its result (what `--replay-ratio auto --remote` runs for
    each attempt): submit with the attempt's settings, follow it, return its result. `app`: the
    Celery app to send with (default: the one the settings and environment configure)."""
    from service.dist.client import RemoteJobs

    def run_one(s: Any, req: Any) -> dict[str, Any]:
        jobs = RemoteJobs(s, app)
        job = jobs.submit_release(req)
        return jobs.wait(job["job_id"], progress=None if as_json else say)

    return run_one


def submit_release(s: Any, req: Any, wait: bool, as_json: bool) -> None:
    """`ftctl release new-task … --remote [--wait]` (called from cli/release.py with the
    command's settings: its per-job options travel with the job)."""
    from service.dist.client import RemoteJobs

    jobs = RemoteJobs(s)
    job = jobs.submit_release(req)
    parent = (job.get("args") or {}).get("request", {}).get("parent_version")
    if parent and not as_json:  # releases queued together all start from this version
        say(f"parent pinned: version {parent} (the @champion now); a release submitted before this "
            "one ends does not become its parent — use the inbox to release one after another")
    follow(jobs, job, wait, as_json)


@inbox_app.command("add")
@handle_errors
def inbox_add(data: Annotated[str, typer.Argument(help="Task data (file or folder) or an embedded task name.")],
              method: Annotated[str, typer.Option(help="Completion method for this release (default: settings).")] = "",
              mode: Annotated[str, typer.Option(help="online or offline (default online).")] = "",
              as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Add a task to the inbox; the scheduler releases it from the current @champion."""
    from service.dist.config import DistConfig
    from service.dist.inbox import Inbox

    s = settings()
    path = Inbox.of(s, DistConfig.from_settings(s)).add(data, method=method, mode=mode)
    emit({"item": str(path)}, as_json, lambda r: say(f"queued {r['item']} for the next inbox scan"))


@inbox_app.command("list")
@handle_errors
def inbox_list(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Items waiting, being released, done and failed."""
    from service.dist.config import DistConfig
    from service.dist.inbox import SUBDIRS, Inbox

    s = settings()
    inbox = Inbox.of(s, DistConfig.from_settings(s))
    out = {"ready": [p.name for p in inbox.ready()]}
    for d in SUBDIRS:
        folder = inbox.root / d
        out[d] = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    emit(out, as_json)


def _safe(url: str) -> str:
    from service.dist.client import safe_url as safe

    return safe(url)


def standalone() -> typer.Typer:
    """These commands as their own Typer app (`python -m cli.worker …`), same as under `ftctl`."""
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    app.command("worker")(worker)
    app.command("scheduler")(scheduler)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(inbox_app, name="inbox")
    return app


if __name__ == "__main__":
    standalone()()
