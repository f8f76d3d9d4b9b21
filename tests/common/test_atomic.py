"""common.atomic: a destination is the old content or the whole new one, never a torn half."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.atomic import atomic_path, write_text


def test_a_file_appears_whole_and_no_partial_is_left(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "a.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
        assert not dest.exists() and tmp.name.startswith(".") and tmp.name.endswith(".partial")
    assert dest.read_text() == "new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.txt"]


def test_a_failing_writer_leaves_the_old_content(tmp_path: Path) -> None:
    dest = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_directory_replaces_the_previous_one(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    for content in ("v1", "v2"):
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content)
    assert (dest / "weights").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_keep_existing_lets_the_first_writer_win(tmp_path: Path) -> None:
    dest = write_text(tmp_path / "cache", "first")
    with atomic_path(dest, keep_existing=True) as tmp:
        tmp.write_text("second")
    assert dest.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["cache"]
