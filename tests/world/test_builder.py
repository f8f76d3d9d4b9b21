"""The builder: pure pieces and a whole build on synthetic corpora always (fast); a full
rebuild twice when the Debian packages are installed (slow)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.world.synthetic import synthetic_corpora
from training.world.builder import (
    DATA_DIR,
    SOURCES,
    BuildConfig,
    ascii_fold,
    build_world_data,
    chunk_source,
    files_digest,
    task_rows,
)
from training.world.corpora import DebianPaths, package_versions
from training.world.tasks import TaskBuildConfig, TaskSpec
from training.world.tokenizer import train_bpe

SMALL = BuildConfig(chunk_tokens=32, pool_per_source=5, vocab_size=300,
                    tasks=TaskBuildConfig(per_task=8, test_size=3, wordnet_domains=2))

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


@pytest.fixture(scope="module")
def synthetic_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The builder run twice on the same synthetic corpora, once with another seed (~10 s)."""
    root = tmp_path_factory.mktemp("synthetic")
    other = dataclasses.replace(SMALL, seed=1, tasks=dataclasses.replace(SMALL.tasks, seed=1))
    return {
        "root": root,
        "a": build_world_data(SMALL, root / "a", raw=synthetic_corpora()),
        "b": build_world_data(SMALL, root / "b", raw=synthetic_corpora()),
        "seed1": build_world_data(other, root / "seed1", raw=synthetic_corpora()),
    }


def test_build_on_synthetic_corpora_is_deterministic(synthetic_builds: dict[str, Any]) -> None:
    root, a, b = synthetic_builds["root"], synthetic_builds["a"], synthetic_builds["b"]
    assert a["digest"] == b["digest"] == files_digest(root / "a") == files_digest(root / "b")
    files = sorted(p.relative_to(root / "a") for p in (root / "a").rglob("*") if p.is_file())
    assert {"upstream.jsonl.gz", "tasks.jsonl.gz", "tasks-freedict.jsonl.gz"} <= {f.name for f in files}
    for f in files:  # byte-identical, manifest included
        assert (root / "a" / f).read_bytes() == (root / "b" / f).read_bytes(), f
    assert set(a["pool"]) == set(SOURCES) and all(0 < n <= 5 for n in a["pool"].values())
    assert len(a["tasks"]) >= 30 and all(n > 0 for n in a["tasks"].values())


def test_build_digest_depends_on_the_seed(synthetic_builds: dict[str, Any]) -> None:
    assert synthetic_builds["seed1"]["digest"] != synthetic_builds["a"]["digest"]


def test_build_elsewhere_copies_the_licence_note(synthetic_builds: dict[str, Any]) -> None:
    out = synthetic_builds["root"] / "a" / "LICENSES.md"
    assert out.read_text() == (DATA_DIR / "LICENSES.md").read_text()


def test_load_world_from_a_data_dir_pretrains_on_that_pool(synthetic_builds: dict[str, Any]) -> None:
    from training.world import load_world

    d = synthetic_builds["root"] / "a"
    w = load_world("tiny", data_dir=d)
    assert w.data_dir == d and w.data_digest == synthetic_builds["a"]["digest"]
    pool = w.pretrain_examples()
    assert len(pool) == sum(synthetic_builds["a"]["pool"].values())  # not the committed 6,648
    assert {e.id for e in pool} == set(w.upstream.ids)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")
def test_package_versions_reads_a_downloaded_deb(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: ftctl-test-austen\nVersion: 2.0.0-1\nArchitecture: all\n"
        "Maintainer: t <t@example.org>\nDescription: test package\n"
    )
    deb = tmp_path / "ftctl-test-austen_2.0.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)
    got = package_versions(["ftctl-test-austen", "ftctl-not-a-package"],
                           {"ftctl-test-austen": str(deb), "ftctl-not-a-package": None})
    assert got == {"ftctl-test-austen": "2.0.0-1", "ftctl-not-a-package": ""}


def test_manifest_records_the_austen_deb_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.world.builder as builder

    seen: dict[str, Any] = {}

    def fake_versions(packages: list[str], debs: dict[str, str | None]) -> dict[str, str]:
        seen.update(debs)
        return {p: "1" for p in packages}

    monkeypatch.setattr(builder, "package_versions", fake_versions)
    cfg = dataclasses.replace(SMALL, paths=DebianPaths(austen_deb="/x/r-cran-janeaustenr_1.deb"))
    m = build_world_data(cfg, tmp_path, raw=synthetic_corpora())
    assert seen == {"r-cran-janeaustenr": "/x/r-cran-janeaustenr_1.deb"}
    assert m["packages"]["r-cran-janeaustenr"] == "1"
