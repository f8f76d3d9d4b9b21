"""The builder: pure pieces always; a full rebuild twice when the Debian packages are installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.world.builder import (
    BuildConfig,
    ascii_fold,
    build_world_data,
    chunk_source,
    task_rows,
)
from training.world.tasks import TaskBuildConfig, TaskSpec
from training.world.tokenizer import train_bpe

HAVE_PACKAGES = shutil.which("bible") is not None and Path("/usr/share/wordnet/data.noun").exists()


def test_ascii_fold_maps_typography_and_drops_the_rest() -> None:
    assert ascii_fold("\u201cna\u00efve\u201d \u2014 caf\u00e9\u2026 \u4e2d") == '"naive" -- cafe... '


def test_chunk_source_cuts_fixed_length_chunks() -> None:
    docs = [f"Verse {i}: and the evening and the morning were the day number {i}." for i in range(300)]
    tok = train_bpe(docs, vocab_size=300)
    chunks = chunk_source(tok, docs, n=5, length=32)
    assert len(chunks) == 5
    assert all(28 <= len(tok.encode(c).ids) <= 36 for c in chunks)
    assert chunk_source(tok, docs, n=5, length=32) == chunks


def test_task_rows_split_is_seeded_and_disjoint() -> None:
    spec = TaskSpec("t", "f", "d", [(f"q{i}\n", f"a{i}") for i in range(50)])
    a, b = task_rows([spec], 10, seed=0), task_rows([spec], 10, seed=0)
    assert a == b and len(a[0]["train"]) == 40 and len(a[0]["test"]) == 10
    assert not {tuple(p) for p in a[0]["train"]} & {tuple(p) for p in a[0]["test"]}
    assert task_rows([spec], 10, seed=1) != a


@pytest.mark.slow  # extracting the corpora and building twice: ~15 s alone, more on a busy box
@pytest.mark.skipif(not HAVE_PACKAGES, reason="Debian corpora packages not installed (see training/world/corpora.py)")
def test_build_from_packages_twice_gives_the_same_digest(tmp_path: Path) -> None:
    from training.world.corpora import extract_all

    raw = extract_all()
    cfg = BuildConfig(pool_per_source=30,
                      tasks=TaskBuildConfig(per_task=30, test_size=10, wordnet_domains=3))
    a = build_world_data(cfg, tmp_path / "a", raw=raw)
    b = build_world_data(cfg, tmp_path / "b", raw=raw)
    assert a["digest"] == b["digest"]
    assert a["pool"] == {s: 30 for s in a["pool"]} and len(a["pool"]) == 7
    assert (tmp_path / "a" / "tasks.jsonl.gz").read_bytes() == (tmp_path / "b" / "tasks.jsonl.gz").read_bytes()
