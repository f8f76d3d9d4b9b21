"""`ftctl world`: the embedded worlds (corpora, tasks, base models).

Usage::

    ftctl world list [--world default] [--json]        # upstream sources (chunks) and tasks
    ftctl world show-base [--world default] [--build] [--json]   # the base's convergence curve
    ftctl world build [--out DIR] [--austen-deb DEB] [--seed 0] [--json]   # from the packages

`list` reads the committed data (no packages, no torch). `show-base` reads `pretrain.json` of
the world's cached base model in the workspace (`--build` pre-trains it first when missing) and
prints its upstream NLL curve and whether it converged (the last two evaluations differ by less
than 1%, see training/world/convergence.py). `build` needs the corpora packages installed (see
training/world/corpora.py) and writes byte-identical files for identical packages and seed:
compare the digest it prints with the committed manifest's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

app = typer.Typer(help="The embedded worlds: real offline corpora, tasks and base models.",
                  no_args_is_help=True)

WorldOpt = Annotated[str | None, typer.Option(help="World: default, study, tiny or smollm2; default: the workspace's (`ftctl init --world`).")]


@app.command("list")
@handle_errors
def list_world(
    world: WorldOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the world's upstream sources (chunks each) and its tasks (family, sizes)."""
    from cli.common import settings
    from service.pipeline.world import world_summary

    emit(world_summary(world or settings().world), as_json, _show)


def _show(d: dict[str, Any]) -> None:
    say(f"world {d['world']}: {d['description']} (data {d['data_digest']})")
    table("upstream sources", ["source", "chunks"], [[u["name"], u["chunks"]] for u in d["upstream"]])
    table("tasks", ["task", "family", "train", "test", "description"],
          [[t["name"], t["family"], t["train"], t["test"], t["description"]] for t in d["tasks"]])


@app.command("show-base")
@handle_errors
def show_base(
    world: WorldOpt = None,
    build_missing: Annotated[bool, typer.Option("--build", help="Pre-train the base first if the workspace has none (minutes).")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the world's base model: its upstream NLL curve and whether pre-training converged."""
    from cli.common import settings
    from service.pipeline.world import base_report

    s = settings()
    emit(base_report(s, world or s.world, build_missing=build_missing, say=say), as_json, _show_base)


def _show_base(d: dict[str, Any]) -> None:
    if not d["built"]:
        say(f"world {d['world']}: {d['note']}")
        return
    say(f"world {d['world']}: base in {d['dir']} ({d['params']:,} parameters, {d['steps']} steps, "
        f"{d['seconds']} s, {d['tokens_per_s']:,} tokens/s)")
    if d["upstream_nll_curve"]:
        table(f"upstream NLL on {d['eval_chunks']} chunks (step 0 = random init)",
              ["step", "nll"], [[s, v] for s, v in d["upstream_nll_curve"]])
        verdict = "converged" if d["converged"] else "NOT converged"
        say(f"{verdict}: last two evaluations differ by {100 * d['relative_change']:.2f}% "
            f"({d['rule']}); plot: {d['plot']}")
    else:
        say(d["note"])


@app.command("build")
@handle_errors
def build(
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: the package's data dir).")] = None,
    austen_deb: Annotated[Path | None, typer.Option("--austen-deb", help="The r-cran-janeaustenr .deb (default: newest in . or /tmp).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the upstream shuffle, the task selection and the train/test split (0 = the committed data).")] = 0,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Regenerate the world data from the Debian corpora packages (deterministic)."""
    from service.pipeline.world import build_world

    emit(build_world(out=out, austen_deb=austen_deb, seed=seed, say=say), as_json,
         lambda d: say(f"wrote {d['out']}: digest {d['digest']}, {d['tasks']} tasks, pool {d['pool']}"))
