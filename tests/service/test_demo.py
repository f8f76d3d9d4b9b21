"""`ftctl demo` — the main job — on the tiny world: every stage runs and the tables are complete."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app


def test_demo_runs_end_to_end_on_the_tiny_world(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path), "demo", "--world", "tiny",
                                      "--tasks", "4", "--json"])
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)
    assert len(r["stats"]) == 4 and all("error" not in s for s in r["stats"])
    assert r["new_task"] not in {s["task"] for s in r["stats"]}
    assert r["lowrank"]["rows"] == 4
    assert [x["requested_method"] for x in r["releases"]] == ["mf", "random", "none"]
    for rel in r["releases"]:
        assert math.isfinite(rel["heldout_forgetting"]) and rel["parent_version"] == 1
        assert set(rel["heldout_per_source"]) <= {"austen", "bible", "devil", "fortunes", "jargon", "pydoc", "wordnet"}
        assert len(rel["heldout_per_source"]) >= 5  # a stratified-enough held-out set
    assert r["releases"][2]["replayed"] == 0 and r["releases"][1]["replayed"] >= 1
    steps = r["seconds"]
    assert set(steps) == {"init", "stats", "analysis", "releases", "total"}
    assert steps["total"] >= steps["stats"] > 0
    # The human tables render from the same data without error.
    human = CliRunner().invoke(app, ["--workspace", str(tmp_path), "demo", "--world", "tiny", "--tasks", "4"])
    assert human.exit_code == 0, human.stderr
    assert "held-out ΔNLL per upstream source" in human.stderr
    assert "demo wall time" in human.stderr
