"""NllCache: measure once per (model key, digest, settings), serve subsets from disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import cache as cache_mod
from training.cache import NllCache
from training.data import Example
from training.errors import TrainingError
from training.nll import measure_nll

EX = [Example.text(f"the cat sat on the mat {i}") for i in range(6)]


def test_measures_missing_only_and_serves_from_disk(tmp_path, tok, model, monkeypatch):
    cache = NllCache(tmp_path, "base/v1", "d1g3st", max_length=64)
    first = cache.measure(model, tok, EX[:4])
    np.testing.assert_allclose(first, measure_nll(model, tok, EX[:4], max_length=64))
    calls = []
    real = cache_mod.measure_nll

    def counting(model, tok, examples, **kw):
        calls.append([e.id for e in examples])
        return real(model, tok, examples, **kw)

    monkeypatch.setattr(cache_mod, "measure_nll", counting)
    again = NllCache(tmp_path, "base/v1", "d1g3st", max_length=64).measure(model, tok, EX[3::-1])
    np.testing.assert_array_equal(again, first[::-1])
    assert calls == []  # everything served from disk
    both = cache.measure(model, tok, EX)  # two new examples measured, four served
    assert calls == [[EX[4].id, EX[5].id]]
    np.testing.assert_array_equal(both[:4], first)
    assert len(cache.load()) == 6
    other = NllCache(tmp_path, "base/v2", "d1g3st", max_length=64)
    assert other.path != cache.path and other.load() == {}


def test_key_covers_every_setting_that_changes_the_values(tmp_path, tok, model):
    base = NllCache(tmp_path, "m", "d", max_length=64)
    variants = [
        NllCache(tmp_path, "m", "d", max_length=32),
        NllCache(tmp_path, "m", "d", max_length=64, chat_template=False),
        NllCache(tmp_path, "m", "d", max_length=64, add_eos=False),
        NllCache(tmp_path, "m", "d", max_length=64, dtype="bfloat16"),
        NllCache(tmp_path, "m", "d2", max_length=64),
    ]
    assert len({base.path, *(v.path for v in variants)}) == 6
    assert base.precision == "float32"  # no GPU here: fp32, no autocast
    # add_eos really changes the values: one cached under the other's key would be wrong.
    with_eos = base.measure(model, tok, EX[:2])
    without = variants[2].measure(model, tok, EX[:2])
    assert not np.allclose(with_eos, without)
    np.testing.assert_allclose(
        without, measure_nll(model, tok, EX[:2], max_length=64, add_eos=False)
    )


def test_precision_follows_the_gpu_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = NllCache(tmp_path, "m", "d")
    fp32 = NllCache(tmp_path, "m", "d", bf16=False)
    cpu = NllCache(tmp_path, "m", "d", device="cpu")
    assert gpu.precision == "float32+bf16-autocast" and fp32.precision == cpu.precision == "float32"
    assert gpu.path != cpu.path and fp32.path == cpu.path  # fp32 values are the same wherever
    with pytest.raises(TrainingError, match=r"device=None.*Fix"):
        NllCache(tmp_path, "m", "d", device=None)


def test_measure_keywords(tmp_path, tok, model):
    cache = NllCache(tmp_path, "m", "d", max_length=64)
    # The cache's own setting repeated (used to raise TypeError), plus a harmless keyword.
    seen = []
    vals = cache.measure(
        model, tok, EX[:3], max_length=64, batch_size=2, progress=lambda d, n: seen.append(d)
    )
    np.testing.assert_allclose(vals, measure_nll(model, tok, EX[:3], max_length=64))
    assert seen and seen[-1] == 3
    with pytest.raises(TrainingError, match=r"max_length=32.*measured with max_length=64.*Fix"):
        cache.measure(model, tok, EX[:3], max_length=32)  # even when all are cached
    with pytest.raises(TrainingError, match=r"chat_template=False"):
        cache.measure(model, tok, EX[3:], chat_template=False)


def test_refuses_a_model_of_another_dtype(tmp_path, tok, model):
    cache = NllCache(tmp_path, "m", "d", max_length=64)
    with pytest.raises(TrainingError, match=r"float32 weights, but the model is bfloat16.*Fix"):
        cache.measure(model.to(torch.bfloat16), tok, EX[:2])
    assert cache.load() == {}


def test_evaluator_version_is_part_of_the_key(tmp_path, monkeypatch):
    import training.nll as nll

    v1 = NllCache(tmp_path, "m", "d", max_length=64)
    assert v1.evaluator_version == nll.EVALUATOR_VERSION
    monkeypatch.setattr(nll, "EVALUATOR_VERSION", nll.EVALUATOR_VERSION + 1)
    v2 = NllCache(tmp_path, "m", "d", max_length=64)
    assert v2.path != v1.path  # values of the old evaluator are not served by the new one


def test_put_then_get_and_measure_serve_the_stored_values(tmp_path, tok, model, monkeypatch):
    cache = NllCache(tmp_path, "m", "d", max_length=64)
    assert cache.get(EX[:2]) is None  # nothing cached yet
    cache.put([e.id for e in EX[:4]], np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(cache.get(EX[3::-1]), [4.0, 3.0, 2.0, 1.0])
    assert cache.get(EX[3:5]) is None  # EX[4] is missing: all or nothing
    assert cache.get([]).shape == (0,)
    # put merges with what is on disk, and measure serves put values without the model.
    cache.put([EX[4].id], np.array([5.0]))
    np.testing.assert_array_equal(cache.get(EX[:5]), [1.0, 2.0, 3.0, 4.0, 5.0])
    monkeypatch.setattr(cache_mod, "measure_nll", lambda *a, **k: pytest.fail("measured"))
    np.testing.assert_array_equal(
        NllCache(tmp_path, "m", "d", max_length=64).measure(model, tok, EX[:5]),
        [1.0, 2.0, 3.0, 4.0, 5.0],
    )


def test_put_validates_lengths_and_finiteness(tmp_path):
    cache = NllCache(tmp_path, "m", "d", max_length=64)
    with pytest.raises(TrainingError, match=r"2 ids but values of shape \(3,\).*Fix"):
        cache.put(["a", "b"], np.zeros(3))
    with pytest.raises(TrainingError, match=r"1 value\(s\) are NaN or inf.*'b'.*Fix"):
        cache.put(["a", "b"], np.array([1.0, np.nan]))
    with pytest.raises(TrainingError, match=r"NaN or inf"):
        cache.put(["a"], np.array([np.inf]))
    assert cache.load() == {}  # a rejected put stores nothing
