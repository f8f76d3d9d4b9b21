"""`ftctl forgetting …` (analyze, evaluate, predict) and `ftctl replay recommend`."""

from __future__ import annotations

from typing import Any

import typer

from cli.common import settings
from cli.output import DebugOpt, JsonOpt, emit, handle_errors, table

app = typer.Typer(help="The forgetting matrix: low-rank analysis, completion quality, predictions.",
                  no_args_is_help=True)
replay_app = typer.Typer(help="Replay recommendations.", no_args_is_help=True)


@app.command("analyze")
@handle_errors
def analyze(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """R² of truncated SVD ranks 1..10 and of the additive / task-only / example-only fits."""
    from service.analysis import analyze as _analyze

    emit(_analyze(settings()), as_json, _show)


def _show(r: dict[str, Any]) -> None:
    rep = r["report"]
    rows = [[f"rank {k}", v, r["study_olmo7b_r2"].get(int(k))] for k, v in rep["svd_r2"].items()]
    rows += [["additive", rep["additive_r2"], None], ["multiplicative", rep["multiplicative_r2"], None],
             ["task only", rep["task_only_r2"], None], ["example only", rep["example_only_r2"], None]]
    table(f"forgetting matrix {r['rows']} tasks × {r['columns']} examples: R² by fit",
          ["fit", "R²", "study (OLMo-7B)"], rows)
