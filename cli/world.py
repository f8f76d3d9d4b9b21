"""`ftctl world`: the embedded worlds (corpora, tasks, base models).

Usage::

    ftctl world list [--world default] [--json]   # upstream sources (chunks) and tasks
    ftctl world build [--out DIR] [--json]        # regenerate the data from the Debian packages

`list` reads the committed data (no packages, no torch). `build` needs the corpora packages
installed (see training/world/corpora.py) and writes byte-identical files for identical
packages: compare the digest it prints with the committed manifest's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.output import DebugOpt, JsonOpt, emit, handle_errors, say, table

app = typer.Typer(help="The embedded worlds: real offline corpora, tasks and base models.",
                  no_args_is_help=True)


@app.command("list")
@handle_errors
def list_world(
    world: Annotated[str, typer.Option(help="World: default, study, tiny or smollm2.")] = "default",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the world's upstream sources (chunks each) and its tasks (family, sizes)."""
    from training.world import WORLDS, load_world

    w = load_world(world)
    data = {
        "world": w.name,
        "worlds": sorted(WORLDS),
        "description": w.description,
        "data_digest": w.data_digest,
        "upstream_digest": w.upstream.digest,
        "upstream": [{"name": s, "chunks": n} for s, n in w.sources().items()],
        "tasks": [{"name": t.name, "family": t.family, "description": t.description,
                   "train": len(t.train), "test": len(t.test)} for t in w.tasks.values()],
        "base_model": {"kind": w.base_model_spec.kind, "key": w.base_model_spec.key()},
    }
    emit(data, as_json, _show)


def _show(d: dict[str, Any]) -> None:
    say(f"world {d['world']}: {d['description']} (data {d['data_digest']})")
    table("upstream sources", ["source", "chunks"], [[u["name"], u["chunks"]] for u in d["upstream"]])
    table("tasks", ["task", "family", "train", "test", "description"],
          [[t["name"], t["family"], t["train"], t["test"], t["description"]] for t in d["tasks"]])


@app.command("build")
@handle_errors
def build(
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: the package's data dir).")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Regenerate the world data from the Debian corpora packages (deterministic)."""
    from training.world.builder import DATA_DIR, build_world_data

    manifest = build_world_data(out_dir=out or DATA_DIR, progress=say)
    emit({"out": str(out or DATA_DIR), "digest": manifest["digest"], "pool": manifest["pool"],
          "tasks": len(manifest["tasks"])}, as_json,
         lambda d: say(f"wrote {d['out']}: digest {d['digest']}, {d['tasks']} tasks, pool {d['pool']}"))
