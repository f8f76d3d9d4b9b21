"""`ftctl init`, `ftctl line show`, `ftctl tasks list` and `ftctl demo`: create the model line,
see what it is made of, run the main job end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table


@handle_errors
def init(
    world: Annotated[str, typer.Option(help="Embedded world: default (ftctl's own base model, N = 1,960), study (the same base, N = 3,150), tiny (tests) or smollm2 (a real pretrained LM).")] = "default",
    model: Annotated[str | None, typer.Option(help="Your base model, registered as release 0 instead of the world's: a save_pretrained directory (safetensors), or a hub name such as HuggingFaceTB/SmolLM2-135M where the network allows.")] = None,
    model_line: Annotated[str | None, typer.Option(help="Registered-model name / experiment of this line.")] = None,
    upstream: Annotated[Path | None, typer.Option(help="Your upstream set: a sample of what the model learned before (JSONL/JSON/CSV/parquet file(s) or a directory of them; `text` or `prompt`/`response` records, optional `id` and `source`). Needs --model.")] = None,
    tasks: Annotated[Path | None, typer.Option(help="Your task catalogue: a directory with one task file (or folder) per task and an optional tasks.toml (family, description).")] = None,
    chat_template: Annotated[str | None, typer.Option(help="Instruction data through the tokenizer's chat template: auto (when it has one) or none.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example for training and measuring (default: the world recipe's 256, else 1024; at most the model's context).")] = None,
    long_records: Annotated[str | None, typer.Option(help="Upstream records longer than max-length: truncate (keep the last tokens; counted) or refuse.")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the model's own modelling code (only for a source you trust).")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create the model line: register the base model as version 1 @champion, with the upstream
    set whose forgetting is measured and the catalogue of tasks (a world preset, or your own)."""
    from service.pipeline.line import init_line

    s = settings(world=world, model_line=model_line,
                 upstream=str(upstream.expanduser().resolve()) if upstream else None,
                 tasks=str(tasks.expanduser().resolve()) if tasks else None,
                 chat_template=chat_template, max_length=max_length, long_records=long_records,
                 trust_remote_code=trust_remote_code or None)
    emit(init_line(s, model=model, progress=say), as_json,
         lambda r: say(f"model line {r['model_line']!r}: @champion = version {r['version']} "
                       f"({r['upstream']}; {r.get('encoding', '')})"))


line_app = typer.Typer(help="The model line: base model, upstream set, task catalogue.",
                       no_args_is_help=True)
tasks_app = typer.Typer(help="The line's task catalogue.", no_args_is_help=True)


@line_app.command("show")
@handle_errors
def line_show(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """The line's base model and champion, its upstream set and its task catalogue."""
    from service.pipeline.line import describe_line

    def show(d: dict[str, Any]) -> None:
        up, base = d["upstream"], d["base_model"] or {}
        table(f"model line {d['model_line']}", ["", "value"], [
            ["base model", f"version {base.get('version')} ({base.get('source')})" if base else "none"],
            ["@champion", d["champion"]], ["versions", d["versions"]],
            ["upstream set", f"{up['from']}: {up['examples']:,} examples, digest {up['digest'][:12]}, "
                             f"{up['heldout']:,} held out"],
            ["upstream sources", ", ".join(f"{k} {v}" for k, v in up["sources"].items())],
            ["tasks", f"{d['tasks']['from']}: {d['tasks']['count']} tasks"],
            ["encoding", f"{d['encoding']}, long records: {d['long_records']}"
                         + (", trust_remote_code" if d["trust_remote_code"] else "")]])

    emit(describe_line(settings()), as_json, show)


@tasks_app.command("list")
@handle_errors
def tasks_list(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """The line's tasks (`ftctl stats collect --all` and the scheduler's statistics jobs use them)."""
    from service.pipeline.line import list_tasks

    emit(list_tasks(settings()), as_json, lambda ts: table(
        "tasks", ["task", "family", "description", "data"],
        [[t["name"], t["family"], t["description"], t["path"]] for t in ts]))


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
                     res["heldout_forgetting"], f"{res['replayed']} / {res.get('budget')}",
                     res.get("replay_slots"), res.get("version"),
                     "yes" if res.get("champion") else ""])
    table(f"new task {r['new_task']}: held-out (never replayed) forgetting by strategy",
          ["replay", "task loss before", "after", "held-out ΔNLL", "distinct / budget", "slots",
           "version", "champion"], rows)
    say("one task, one seed: this shows the loop, it is no evidence that one strategy forgets "
        "less. The comparison over tasks (matched controls, task-level tests, CIs) is "
        "docs/results/ (`python -m bench.science`).")
    sources = sorted({s for res in r["releases"] for s in res["heldout_per_source"]})
    table("held-out ΔNLL per upstream source", ["source", *[res["method"] for res in r["releases"]]],
          [[s, *[res["heldout_per_source"].get(s) for res in r["releases"]]] for s in sources])
    sec = r.get("seconds", {})
    if sec:
        say(f"demo wall time {sec['total']:.0f} s: " + ", ".join(
            f"{k} {v:.0f} s" for k, v in sec.items() if k != "total"))
    say(f"MLflow UI: run `ftctl ui` and open {r['ui_url']} (experiment {r['model_line']!r})")
