"""`ftctl release …`: new releases, the registry's versions, promotion and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table
from forgetting.methods import method_help

app = typer.Typer(help="Release new tasks with predicted replay; list, promote and roll back versions.",
                  no_args_is_help=True)


@app.command("new-task")
@handle_errors
def new_task(
    data: Annotated[str, typer.Argument(help="Embedded task name (`ftctl world list`) or a path to task data (JSONL/CSV/parquet/save_to_disk dir).")],
    name: Annotated[str, typer.Option(help="Run name of the release.")] = "",
    method: Annotated[str, typer.Option(help=f"{method_help()}; default from settings.")] = "",
    mode: Annotated[str, typer.Option(help="online: one fine-tune, probes after the warm-up; offline: plain fine-tune, probes, then the replay fine-tune.")] = "online",
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapters (peft) or full fine-tuning; default from settings.")] = None,
    steps: Annotated[int, typer.Option(help="Fine-tuning steps before the (1 + r) replay extension; 0 = settings.")] = 0,
    replay_ratio: Annotated[str | None, typer.Option(help="Replay budget ratio r: int(|task|·r)+1 upstream examples (study: 1/32), or auto: start from the ratio the line's past releases passed their gate with and retry larger ratios (1/64 … 1/4) while the gate fails on forgetting.")] = None,
    ratio_cap: Annotated[float, typer.Option(help="With --replay-ratio auto: the largest ratio tried.")] = 0.25,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature T of softmax(pred/T) (study: 0.1).")] = None,
    replay_source: Annotated[str, typer.Option(help="upstream: replay stored upstream examples; self: sequences the @champion samples itself before the fine-tune (no upstream data needed); mix: half of the budget each.")] = "upstream",
    k: Annotated[int | None, typer.Option(help="Probe examples measured after the warm-up (study: 30).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of probes, replay sampling and training.")] = None,
    job_id: Annotated[str, typer.Option(help="Idempotency key; rerunning a finished job returns its result.")] = "",
    promote: Annotated[bool, typer.Option(help="Move @champion to the new version when it passes the gate.")] = True,
    measure_all: Annotated[bool, typer.Option(help="Measure and log every upstream example, not only held-out + probes.")] = False,
    remote: Annotated[bool, typer.Option(help="Submit to the Celery workers (FTCTL_BROKER_URL) and print the job id.")] = False,
    wait: Annotated[bool, typer.Option(help="With --remote: follow the job (stage, step, ETA) until it ends.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune the @champion on a new task with the replay its predicted forgetting calls for."""
    from service.release.request import ReleaseRequest, release_new_task

    if wait and not remote:
        raise typer.BadParameter("--wait follows a remote job; add --remote")
    auto = replay_ratio is not None and replay_ratio.strip().lower() == "auto"
    ratio = None
    if replay_ratio is not None and not auto:
        try:
            ratio = float(replay_ratio)
        except ValueError:
            raise typer.BadParameter(f"--replay-ratio takes a number such as 0.03125 or 'auto', "
                                     f"got {replay_ratio!r}") from None
    s = settings(lora=lora, replay_ratio=ratio, temperature=temperature, k=k)
    req = ReleaseRequest(task=data, method=method, mode=mode, name=name, steps=steps, seed=seed,  # type: ignore[arg-type]
                         job_id=job_id, promote=promote, measure_all=measure_all,
                         replay_source=replay_source)
    if auto:
        from service.release.auto import release_auto

        if remote and not wait:
            raise typer.BadParameter("--replay-ratio auto with --remote decides each next ratio "
                                     "from the last result: add --wait")
        run_one = None
        if remote:
            from cli import worker

            run_one = worker.remote_release_runner(as_json)
        emit(release_auto(s, req, cap=ratio_cap, run_one=run_one, progress=say), as_json,
             _show_auto)
        return
    if remote:
        from cli import worker

        worker.submit_release(s, req, wait, as_json)
        return
    result = release_new_task(s, req, progress=say)
    emit(result, as_json, _show_release)


@app.command("chain")
@handle_errors
def chain(
    data: Annotated[list[str], typer.Argument(help="Tasks in release order: embedded task names or paths to task data.")],
    method: Annotated[str, typer.Option(help=f"{method_help()}; default from settings.")] = "",
    mode: Annotated[str, typer.Option(help="online or offline (see `release new-task`).")] = "online",
    replay_ratio: Annotated[float | None, typer.Option(help="Replay budget ratio r for every release (study: 1/32).")] = None,
    earlier_replay_share: Annotated[float | None, typer.Option(help="Share of each release's replay budget given to train examples of the chain's earlier tasks (0 = upstream only; see docs/chains.md).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every release.")] = None,
    name: Annotated[str, typer.Option(help="Run name prefix (NAME:1, NAME:2, …).")] = "",
    stop_on_failure: Annotated[bool, typer.Option(help="End the chain at the first release whose gate fails (default: a failed release leaves the champion where it was and the chain goes on).")] = False,
    remote: Annotated[bool, typer.Option(help="Run each release on the Celery workers, one after another.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Release several tasks in order, each from the version the one before it made (when it
    passed its gate): each release's forgetting vs its parent and vs the base, and its earlier
    tasks' retention. Starts from the @champion; a rerun reuses the links that finished."""
    from service.release.request import ReleaseRequest
    from service.release.series import release_chain

    s = settings(replay_ratio=replay_ratio, earlier_replay_share=earlier_replay_share)
    template = ReleaseRequest(task=data[0] if data else "", method=method, mode=mode,  # type: ignore[arg-type]
                              seed=seed, name=name)
    run_one = None
    if remote:
        from cli import worker

        run_one = worker.remote_release_runner(as_json)
    emit(release_chain(s, data, template, run_one=run_one, stop_on_failure=stop_on_failure,
                       progress=say), as_json, _show_chain)


def _show_chain(r: dict[str, Any]) -> None:
    table("chain: each release from the champion the one before it left",
          ["#", "task", "version", "champion", "gate", "ΔNLL vs parent", "vs base", "earlier tasks (max Δloss)"],
          [[i, x["task"], x.get("version"), "yes" if x.get("champion") else "",
            "passed" if x["gate"]["passed"] else "failed: " + "; ".join(x["gate"]["reasons"]),
            x.get("heldout_forgetting"), x.get("heldout_vs_base"),
            max((e["increase"] for e in x.get("retention") or []), default=None)]
           for i, x in enumerate(r["releases"], 1)])
    sm = r["summary"]
    say(f"from version {r['start_version']}: {r['promoted']} of {len(r['releases'])} promoted; "
        f"last passing link version {sm['last_version']}: "
        f"held-out ΔNLL vs base {sm['heldout_vs_base']}, earlier tasks' mean loss increase "
        f"{sm['earlier_task_loss_increase_mean']}" + ("" if r["complete"] else " (chain stopped early)"))


def _show_auto(r: dict[str, Any]) -> None:
    _show_release(r)
    a = r["auto"]
    say(f"auto ratio: {a['calibration']['note']}")
    table("attempts (each its own release run, nested under the auto-ratio run)",
          ["ratio", "held-out ΔNLL", "distinct / budget", "gate", "version"],
          [[f"{x['ratio']:g}", x["heldout_forgetting"], f"{x['replayed']} / {x['budget']}",
            "passed" if x["gate_passed"] else "failed: " + "; ".join(x["reasons"]), x["version"]]
           for x in a["attempts"]])


def _show_release(r: dict[str, Any]) -> None:
    gate = r["gate"]
    table(f"release {r['task']} ({r['method']}, {r['mode']})", ["", "value"], [
        ["version", r.get("version")], ["champion", r.get("champion")],
        ["task loss before → after", f"{r['task_loss_before']:.4f} → {r['task_loss_after']:.4f}"],
        ["held-out forgetting (mean ΔNLL) vs parent", r.get("heldout_forgetting")],
        [f"held-out forgetting vs base (version {r.get('base_version')})", r.get("heldout_vs_base")],
        ["replayed (distinct / budget)", f"{r.get('replayed')} / {r.get('budget')}"],
        ["replay slots (share of positions)",
         f"{r.get('replay_slots')} ({r.get('replay_slot_share') or 0:.2%})"],
        ["gate", "passed" if gate["passed"] else "failed: " + "; ".join(gate["reasons"])],
        ["job", f"{r['job_id']} (run {r['run_id']})" + (" — reused" if r.get("reused") else "")],
    ])
    if r.get("retention"):
        table("earlier tasks of the chain: test loss just after their release → now",
              ["version", "task", "at release", "now", "increase"],
              [[x["version"], x["task"], x["loss_at_release"], x["loss_now"], f"{x['increase']:+.4f}"]
               for x in r["retention"]])
    if r.get("note"):
        say(f"note: {r['note']}")


@app.command("list")
@handle_errors
def list_versions(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """The model line's versions with their aliases and lineage: each release's held-out
    forgetting against its parent and against the base, and the largest loss increase of an
    earlier task of its chain (nats)."""
    from service.tracking.registry import Registry
    from service.tracking.store import Tracker

    versions = [v.to_dict() for v in Registry(Tracker(settings())).versions()]
    emit(versions, as_json, lambda vs: table(
        "versions", ["version", "aliases", "task", "method", "parent", "gate", "ΔNLL vs parent",
                     "vs base", "earlier tasks (max Δloss)"], [
            [v["version"], ",".join(v["aliases"]), v["tags"].get("ftctl.task"), v["tags"].get("ftctl.method"),
             v["tags"].get("ftctl.parent_version"), v["tags"].get("ftctl.gate", ""),
             v["tags"].get("ftctl.heldout_forgetting", ""), v["tags"].get("ftctl.heldout_vs_base", ""),
             v["tags"].get("ftctl.earlier_loss_increase_max", "")] for v in vs]))


@app.command("line")
@handle_errors
def line(version: Annotated[int | None, typer.Argument(help="Version whose lineage to show (default: @champion).")] = None,
         as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """A version's lineage, base first: each release's held-out ΔNLL vs its parent and vs the
    base, the largest earlier-task loss increase, and the margin to each gate budget (nats;
    < 0: over budget). Every registered release logs the same view as figures/model_line.png."""
    from service.release.history import line_points
    from service.tracking.registry import Registry
    from service.tracking.store import Tracker

    s = settings()
    registry = Registry(Tracker(s))
    points = line_points(registry, registry.get(version) if version else registry.champion())
    rows = [p.to_dict(s) for p in points]

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:+.2f}"

    emit(rows, as_json, lambda rs: table(
        "lineage (nats; margin = gate budget − figure, < 0: over)",
        ["v", "task", "gate", "Δ parent", "Δ base", "earlier", "m.parent", "m.base", "m.earlier"], [
            [f"{r['version']}" + ("*" if "champion" in r["aliases"] else ""), r["task"], r["gate"],
             fmt(r["vs_parent"]), fmt(r["vs_base"]), fmt(r["earlier_max"]),
             *[fmt(r["margins"][k]) for k in ("vs_parent", "vs_base", "earlier_max")]]
            for r in rs]))
    if not as_json:
        say("* = @champion; earlier = the largest test-loss increase of an earlier task of the chain")


@app.command("show")
@handle_errors
def show(version: Annotated[int, typer.Argument(help="Version number.")], as_json: JsonOpt = False,
         debug: DebugOpt = False) -> None:
    """One version: aliases, lineage tags, source and the run that produced it."""
    from service.tracking.registry import Registry
    from service.tracking.store import Tracker

    emit(Registry(Tracker(settings())).get(version).to_dict(), as_json)


@app.command("promote")
@handle_errors
def promote(version: Annotated[int, typer.Argument(help="Version to make @champion.")],
            as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Point @champion at a version (bypasses the gate: the decision is yours)."""
    from service.pipeline.line import promote as _promote

    emit(_promote(settings(), version), as_json, lambda r: say(f"@champion → version {r['champion']}"))


@app.command("rollback")
@handle_errors
def rollback(version: Annotated[int | None, typer.Argument(help="Version to return to; default: the champion's parent.")] = None,
             as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Move @champion back (to the current champion's parent unless a version is given)."""
    from service.pipeline.line import rollback as _rollback

    emit(_rollback(settings(), version), as_json,
         lambda r: say(f"@champion → version {r['champion']} (was {r['previous_champion']})"))
