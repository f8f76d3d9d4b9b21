"""`ftctl world list / show-base / build` through the Typer sub-app."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.world import app


def test_list_json_is_one_document_with_sources_and_tasks() -> None:
    r = CliRunner().invoke(app, ["list", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["world"] == "default"
    assert 6 <= len(d["upstream"]) <= 8
    assert {u["name"] for u in d["upstream"]} >= {"bible", "austen", "pydoc", "wordnet"}
    assert all(u["chunks"] == 280 for u in d["upstream"])
    assert sum(u["chunks"] for u in d["upstream"]) == 1960
    assert len(d["tasks"]) >= 40
    for t in d["tasks"]:
        assert set(t) == {"name", "family", "description", "train", "test"}
        assert t["train"] > 0 and t["test"] > 0, t["name"]


def test_list_tiny_world() -> None:
    r = CliRunner().invoke(app, ["list", "--world", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["world"] == "tiny" and sum(u["chunks"] for u in d["upstream"]) == 210
    assert "86k parameters" in d["description"]


def test_unknown_world_exits_1_with_the_fix() -> None:
    r = CliRunner().invoke(app, ["list", "--world", "nope"])
    assert r.exit_code == 1
    assert "one of" in r.output


def _fake_base(ws: Path, curve: list[list[float]]) -> Path:
    from training.world import load_world
    from training.world.pretrain import base_model_dir

    d = base_model_dir(load_world("tiny"), ws)
    d.mkdir(parents=True)
    rec = {
        "params": 86176,
        "steps": 100,
        "seconds": 3.0,
        "tokens_per_s": 50000,
        "eval_chunks": 210,
        "loss_curve": [[100, 6.4]],
        "upstream_nll_curve": curve,
    }
    (d / "pretrain.json").write_text(json.dumps(rec))
    return d


def test_show_base_prints_the_curve_and_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTCTL_WORKSPACE", str(tmp_path))
    _fake_base(tmp_path, [[0, 7.62], [50, 6.6], [100, 6.55]])
    r = CliRunner().invoke(app, ["show-base", "--world", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["built"] and d["converged"] is True and d["upstream_nll_curve"][-1] == [100, 6.55]
    assert d["relative_change"] == pytest.approx(0.05 / 6.6, abs=1e-5)
    r = CliRunner().invoke(app, ["show-base", "--world", "tiny"])
    assert r.exit_code == 0 and "converged: last two evaluations differ by 0.76%" in r.output


def test_show_base_says_not_converged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTCTL_WORKSPACE", str(tmp_path))
    _fake_base(tmp_path, [[0, 7.62], [50, 6.9], [100, 6.6]])
    r = CliRunner().invoke(app, ["show-base", "--world", "tiny"])
    assert r.exit_code == 0 and "NOT converged" in r.output


def test_show_base_of_smollm2_exits_1_with_the_fix() -> None:
    r = CliRunner().invoke(app, ["show-base", "--world", "smollm2"])
    assert r.exit_code == 1 and "scratch world" in r.output


def test_build_without_the_packages_exits_1_with_the_apt_get_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real extractor, pointed at paths where no package installed anything."""
    import training.world.builder as builder
    from training.world import corpora

    missing = str(tmp_path / "not-installed")

    def extract_nothing(paths: corpora.DebianPaths) -> corpora.RawCorpora:
        return corpora.extract_all(
            dataclasses.replace(
                paths,
                bible_program=missing,
                wordnet_dir=missing,
                fortunes_dir=missing,
                dictd_dir=missing,
                pydoc_dir=missing,
            )
        )

    monkeypatch.setattr(builder, "extract_all", extract_nothing)
    r = CliRunner().invoke(app, ["build", "--out", str(tmp_path / "out"), "--seed", "3"])
    assert r.exit_code == 1, r.output
    assert "apt-get install -y --no-install-recommends python3.11-doc" in r.output
    assert not (tmp_path / "out" / "upstream.jsonl.gz").exists()


def test_build_passes_the_deb_and_the_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.world.builder as builder

    seen = {}

    def fake_build(cfg: builder.BuildConfig, out_dir: Path, progress: object = None) -> dict:
        seen["cfg"], seen["out"] = cfg, out_dir
        return {"digest": "d", "pool": {}, "tasks": {}, "packages": {}}

    monkeypatch.setattr(builder, "build_world_data", fake_build)
    deb = tmp_path / "r-cran-janeaustenr_1.0.deb"
    deb.write_bytes(b"!<arch>\n")
    r = CliRunner().invoke(
        app, ["build", "--out", str(tmp_path), "--austen-deb", str(deb), "--seed", "7", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert seen["cfg"].seed == seen["cfg"].tasks.seed == 7
    assert seen["cfg"].paths.austen_deb == str(deb) and seen["out"] == tmp_path
    r = CliRunner().invoke(app, ["build", "--austen-deb", str(tmp_path / "nope.deb")])
    assert r.exit_code == 1 and "apt-get download r-cran-janeaustenr" in r.output
