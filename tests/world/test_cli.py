"""`ftctl world list --json` through the Typer sub-app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.world import app


def test_list_json_is_one_document_with_sources_and_tasks() -> None:
    r = CliRunner().invoke(app, ["list", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["world"] == "default"
    assert {u["name"] for u in d["upstream"]} >= {"bible", "austen", "pydoc", "wordnet"}
    assert all(u["chunks"] == 280 for u in d["upstream"])
    assert len(d["tasks"]) >= 40
    t = d["tasks"][0]
    assert set(t) == {"name", "family", "description", "train", "test"} and t["train"] > 0


def test_list_tiny_world() -> None:
    r = CliRunner().invoke(app, ["list", "--world", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["world"] == "tiny"


def test_unknown_world_exits_1_with_the_fix() -> None:
    r = CliRunner().invoke(app, ["list", "--world", "nope"])
    assert r.exit_code == 1
    assert "one of" in r.output
