"""The matrix's row policy on a real MLflow store (metadata only): each task's row comes from the
nearest version on the lineage, a refreshed row replaces its ancestor's, a sibling branch's rows
are used only when too few remain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from service.settings import load_settings
from service.tracking.matrix import choose_rows
from service.tracking.registry import Registry
from service.tracking.store import TAG, Tracker

DIGEST = "d" * 64


@dataclass
class Cols:
    ids: list[str]
    digest: str


@pytest.fixture()
def line(tmp_path: Path) -> tuple[Tracker, dict[str, int]]:
    """Versions base → a → b, and a sibling c → from base."""
    tracker = Tracker(load_settings(overrides={"workspace": tmp_path / "ws", "tracking_uri": ""}))
    reg = Registry(tracker)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    v: dict[str, int] = {}
    for name, parent in (("base", None), ("a", "base"), ("b", "a"), ("c", "base")):
        with tracker.run(name) as run:
            run.log_artifacts(model, "model")
        v[name] = reg.register(run.run_id, "model", {
            TAG + "parent_version": str(v[parent]) if parent else "none"}).version
    return tracker, v


def row(tracker: Tracker, task: str, version: int) -> str:
    with tracker.run(f"stats:{task}@{version}", tags={
            TAG + "kind": "stats", TAG + "role": "job", TAG + "digest": DIGEST, TAG + "row": "full",
            TAG + "task": task, TAG + "base_version": str(version)}) as run:
        pass
    return run.run_id


def test_nearest_version_on_the_lineage_wins(line: tuple[Tracker, dict[str, int]]) -> None:
    tracker, v = line
    old = {t: row(tracker, t, v["base"]) for t in ("t1", "t2", "t3")}
    fresh_t1 = row(tracker, "t1", v["b"])  # refreshed on b
    mid_t2 = row(tracker, "t2", v["a"])  # refreshed on a
    sibling_t3 = row(tracker, "t3", v["c"])  # another branch: never for b's matrix
    only_c = row(tracker, "t4", v["c"])
    got = choose_rows(tracker, Cols([], DIGEST), base_version=v["b"])
    assert sorted(got.keys) == sorted([fresh_t1, mid_t2, old["t3"]])
    assert "1 measured on version" in got.note and "2 on its ancestors (up to 2 promotion(s) back)" in got.note
    # The base's own matrix: its rows only; a's: t2 refreshed there.
    assert sorted(choose_rows(tracker, Cols([], DIGEST), base_version=v["base"]).keys) == sorted(old.values())
    assert sorted(choose_rows(tracker, Cols([], DIGEST), base_version=v["a"]).keys) == \
        sorted([old["t1"], mid_t2, old["t3"]])
    # Too few on the lineage: the other branch's rows of missing tasks are added, and said so.
    many = choose_rows(tracker, Cols([], DIGEST), base_version=v["b"], min_rows=4)
    assert only_c in many.keys and sibling_t3 not in many.keys and "other versions" in many.note
    # A task left out (the release's own) is never chosen.
    assert fresh_t1 not in choose_rows(tracker, Cols([], DIGEST), base_version=v["b"],
                                       exclude_tasks=frozenset({"t1"})).keys
