"""A user's upstream set and task catalogue read from their own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.catalogue import load_catalogue
from training.errors import TrainingError
from training.upstream import read_upstream


def jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_upstream_ids_sources_and_duplicates(tmp_path: Path) -> None:
    jsonl(tmp_path / "up" / "books.jsonl", [{"text": f"line {i}"} for i in range(60)]
          + [{"text": "line 0"}])  # a duplicate of the first
    jsonl(tmp_path / "up" / "chat.jsonl", [{"prompt": f"q{i}", "response": f"a{i}", "id": f"c{i}",
                                             "source": "support"} for i in range(50)])
    got = read_upstream(tmp_path / "up", min_examples=100)
    assert got.upstream.examples[0].source == "books" and got.duplicates_dropped == 1
    assert got.sources == {"books": 60, "support": 50}
    assert {"c0", "c49"} <= set(got.upstream.ids)  # the user's ids are kept
    again = read_upstream(tmp_path / "up", min_examples=100)
    assert again.upstream.digest == got.upstream.digest  # stable across reads
    with pytest.raises(TrainingError, match="110 distinct upstream examples"):
        read_upstream(tmp_path / "up", min_examples=111)


def test_catalogue_names_families_and_errors(tmp_path: Path) -> None:
    jsonl(tmp_path / "t" / "alpha.jsonl", [{"text": "x"}])
    jsonl(tmp_path / "t" / "beta" / "train.jsonl", [{"text": "y"}])
    (tmp_path / "t" / "tasks.toml").write_text('[alpha]\nfamily = "f"\ndescription = "d"\n')
    cat = load_catalogue(tmp_path / "t")
    assert sorted(cat) == ["alpha", "beta"] and cat["alpha"].family == "f"
    assert cat["beta"].path.endswith("beta") and cat["beta"].family == ""
    (tmp_path / "t" / "tasks.toml").write_text('[alpha]\nowner = "me"\n')
    with pytest.raises(TrainingError, match="family and description only"):
        load_catalogue(tmp_path / "t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="no task files"):
        load_catalogue(tmp_path / "empty")
