"""Release 0 of the tiny world: pre-trains in seconds, is cached, atomic, and learned something."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from training.world import load_world
from training.world.pretrain import base_model_dir, ensure_base_model, loss_curve


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ws = tmp_path_factory.mktemp("ws")
    return ws, ensure_base_model(load_world("tiny"), ws, num_threads=1)


def test_tiny_base_is_built_cached_and_written_atomically(tiny_base: tuple[Path, Path]) -> None:
    ws, d = tiny_base
    w = load_world("tiny")
    assert d == base_model_dir(w, ws)
    rec = json.loads((d / "pretrain.json").read_text())
    assert rec["steps"] == w.base_model_spec.steps
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert ensure_base_model(w, ws) == d  # second call: the cached directory, untouched
    assert (d / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temporary directory left
    curve = [loss for _, loss in rec["loss_curve"]]
    assert curve[-1] < curve[0] - 0.5


def test_pretrained_tiny_base_beats_random_init_on_upstream_nll(tiny_base: tuple[Path, Path]) -> None:
    from training.model import build_model, load_model
    from training.nll import measure_nll

    w = load_world("tiny")
    model, tok = load_model(tiny_base[1])
    random_init = build_model(dict(w.base_model_spec.arch), seed=1)
    examples = w.upstream.examples
    trained = measure_nll(model, tok, examples, batch_size=64)
    untrained = measure_nll(random_init, tok, examples, batch_size=64)
    assert np.isfinite(trained).all()
    # ln(2048) = 7.62 nats for a uniform guess; pre-training must be far below that.
    assert trained.mean() < untrained.mean() - 1.0
    assert (trained < untrained).mean() > 0.95


def test_pretraining_is_deterministic_under_the_seed(tmp_path: Path) -> None:
    w = load_world("tiny")
    short = dataclasses.replace(w, base_model_spec=dataclasses.replace(w.base_model_spec, steps=12))
    a = ensure_base_model(short, tmp_path / "a", num_threads=1)
    b = ensure_base_model(short, tmp_path / "b", num_threads=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_loss_curve_averages_windows() -> None:
    hist = [{"step": i, "loss": float(i)} for i in range(5)]
    assert loss_curve(hist, every=2) == [(2, 0.5), (4, 2.5), (5, 4.0)]
