"""finetune(): learning, forgetting with the right sign, LoRA, replay accounting, online probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import FinetuneConfig, LoraSettings
from training.data import Example, TaskDataConfig
from training.errors import TrainingError
from training.finetune import FinetuneResult, ProbeSpec, ReplaySpec, evaluate_loss, finetune
from training.nll import measure_nll
from training.upstream import UpstreamSet

from .conftest import tiny_model

UPSTREAM = UpstreamSet.from_texts(
    [
        f"the cat sat on the mat {i}. the lazy dog jumps over the quick brown fox."
        for i in range(16)
    ],
    "story",
)
TASK = [
    Example.make(f"question: what is {i} plus {j}?", f" answer: {i + j}.", "sums")
    for i in range(6)
    for j in range(4)
]
HELDOUT = frozenset(UPSTREAM.ids[12:])
FAST = {"batch_size": 4, "warmup_steps": 2, "num_threads": 1, "max_length": 64}


def random_schedule(ids):
    return [(i, 1.0) for i in ids]


@pytest.fixture(scope="module")
def pretrained(tok):
    """A tiny model that has learned the upstream texts (plain text, cosine: as the world does)."""
    model = tiny_model(tok, seed=0)
    cfg = FinetuneConfig(lr=1e-2, steps=60, schedule="cosine", min_lr_ratio=0.1, **FAST)
    result = finetune(model, tok, UPSTREAM.examples, cfg)
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 1.0
    return result.model.state_dict()


def fresh(tok, state):
    model = tiny_model(tok, seed=0)
    model.load_state_dict(state)
    return model


def test_finetune_learns_the_task_and_forgetting_has_the_right_sign(tok, pretrained):
    model = fresh(tok, pretrained)
    before_up = measure_nll(model, tok, UPSTREAM.examples)
    before_task = evaluate_loss(model, tok, TASK)
    result = finetune(model, tok, TASK, FinetuneConfig(lr=1e-2, steps=40, **FAST))
    assert isinstance(result, FinetuneResult) and result.steps == 40 and len(result.history) == 40
    assert result.replayed_ids == [] and all(h["replay"] == 0 for h in result.history)
    assert evaluate_loss(result.model, tok, TASK) < before_task - 1.0
    delta = measure_nll(result.model, tok, UPSTREAM.examples) - before_up
    assert (delta > 0).all()  # every upstream example got worse: forgotten


def test_lora_trains_only_the_adapter_and_before_is_the_base(tok, pretrained):
    model = fresh(tok, pretrained)
    base_nll = measure_nll(model, tok, UPSTREAM.examples)
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(lr=1e-2, steps=20, lora=LoraSettings(r=4, dropout=0.0), **FAST)
    result = finetune(model, tok, TASK, cfg)
    peft_model = result.model
    assert hasattr(peft_model, "peft_config")
    base_now = peft_model.get_base_model().state_dict()
    for k, v in base_weights.items():  # frozen base weights (peft renames wrapped layers)
        k2 = k if k in base_now else k.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_now[k2], v), k
    with peft_model.disable_adapter():  # "before" of a LoRA job: the same model, no adapter
        before = measure_nll(peft_model, tok, UPSTREAM.examples)
    np.testing.assert_allclose(before, base_nll, atol=1e-6)
    assert np.abs(measure_nll(peft_model, tok, UPSTREAM.examples) - before).max() > 1e-3


def test_replay_count_held_out_and_accumulation(tok, pretrained):
    model = fresh(tok, pretrained)
    cfg = FinetuneConfig(lr=1e-3, steps=10, grad_accum=2, **FAST)
    spec = ReplaySpec(
        UPSTREAM.as_pool(), random_schedule(UPSTREAM.ids[:12]), ratio=0.25, exclude_ids=HELDOUT
    )
    steps_seen = []
    result = finetune(
        model, tok, TASK, cfg, replay=spec, progress=lambda s, n, m: steps_seen.append((s, n))
    )
    # 10 steps x 4 x 2 = 80 positions; one in (1 + 1/r) = 5 is replay: 16.
    assert len(result.replayed_ids) == 16 == sum(h["replay"] for h in result.history)
    assert not set(result.replayed_ids) & HELDOUT and set(result.replayed_ids) <= set(
        UPSTREAM.ids[:12]
    )
    assert steps_seen == [(s, 10) for s in range(1, 11)]
    assert len(result.history) == 10 and all(h["tokens"] > 0 for h in result.history)


def test_held_out_in_schedule_is_refused(tok):
    spec = ReplaySpec(
        UPSTREAM.as_pool(), random_schedule(UPSTREAM.ids), ratio=0.25, exclude_ids=HELDOUT
    )
    with pytest.raises(TrainingError, match=r"held-out"):
        finetune(tiny_model(tok), tok, TASK, FinetuneConfig(steps=2, **FAST), replay=spec)


def test_online_probe_switches_at_the_right_step(tok, pretrained):
    model = fresh(tok, pretrained)
    probes = UPSTREAM.examples[12:15]  # measured, never replayed (they are held out)
    base = measure_nll(model, tok, probes)
    seen = {}

    def on_probe(ids, deltas):
        seen["ids"], seen["deltas"] = ids, deltas
        return [(i, 1.0) for i in UPSTREAM.ids[6:12]]

    cfg = FinetuneConfig(lr=1e-2, steps=20, **FAST)
    spec = ReplaySpec(
        UPSTREAM.as_pool(), random_schedule(UPSTREAM.ids[:6]), ratio=0.5, exclude_ids=HELDOUT
    )
    result = finetune(
        model,
        tok,
        TASK,
        cfg,
        replay=spec,
        probe=ProbeSpec(probes, base, at_fraction=0.25, on_probe=on_probe),
    )
    assert result.probe_step == 5
    assert seen["ids"] == [e.id for e in probes]
    np.testing.assert_allclose(seen["deltas"], result.probe_after - base)
    assert (result.probe_after > base).all()  # 5 steps of a different task already hurt
    # Steps 1-5 = positions 0..19: floor(20 / 3) = 6 replay slots from the warm-up schedule.
    assert set(result.replayed_ids[:6]) <= set(UPSTREAM.ids[:6])
    assert set(result.replayed_ids[6:]) <= set(UPSTREAM.ids[6:12])
    assert len(result.replayed_ids) == 80 // 3


def test_deterministic_under_seed(tok):
    cfg = FinetuneConfig(lr=1e-2, steps=6, **FAST)
    spec = ReplaySpec(UPSTREAM.as_pool(), random_schedule(UPSTREAM.ids[:12]), ratio=0.5)
    a = finetune(tiny_model(tok), tok, TASK, cfg, replay=spec)
    b = finetune(tiny_model(tok), tok, TASK, cfg, replay=spec)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.replayed_ids == b.replayed_ids


def test_logger_gets_config_and_metrics(tok, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="run")
    finetune(tiny_model(tok), tok, TASK, FinetuneConfig(steps=3, **FAST), logger=logger)
    logger.finalize("success")
    text = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in text and "train/lr" in text
    assert "lr: 0.0001" in (tmp_path / "run" / "version_0" / "hparams.yaml").read_text()


def test_bad_calls(tok):
    with pytest.raises(TrainingError, match=r"no training examples"):
        finetune(tiny_model(tok), tok, [], FinetuneConfig(steps=1, warmup_steps=0))
    with pytest.raises(TrainingError, match=r"no replay was given"):
        finetune(
            tiny_model(tok),
            tok,
            TASK,
            FinetuneConfig(steps=1, warmup_steps=0),
            probe=ProbeSpec(TASK[:2], np.zeros(2), on_probe=lambda i, d: []),
        )
    with pytest.raises(TrainingError, match=r"tokens > max_length 8.*truncation='left'"):
        finetune(
            tiny_model(tok),
            tok,
            TASK,
            FinetuneConfig(steps=1, warmup_steps=0),
            data=TaskDataConfig(max_length=8, truncation="error"),
        )
    with pytest.raises(TrainingError, match=r"on_probe is missing"):
        ProbeSpec(TASK[:2], np.zeros(2))
    with pytest.raises(TrainingError, match=r"2 examples but 3 base NLLs"):
        ProbeSpec(TASK[:2], np.zeros(3), on_probe=lambda i, d: [])
