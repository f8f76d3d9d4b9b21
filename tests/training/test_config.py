"""FinetuneConfig: validation messages, serialisation, help, and the learning-rate schedule."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from training.config import FinetuneConfig, LoraSettings
from training.errors import TrainingError


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"lr": 0}, r"FinetuneConfig.lr = 0 must be > 0. Fix"),
        ({"steps": 0}, r"steps = 0 must be >= 1"),
        ({"warmup_steps": 200, "steps": 100}, r"warmup_steps = 200 must be in \[0, steps=100\]"),
        ({"schedule": "step"}, r"schedule = 'step' is not one of"),
        ({"min_lr_ratio": 2}, r"min_lr_ratio"),
        ({"precision": "fp8"}, r"precision = 'fp8'"),
        ({"strategy": "deepspeed"}, r"strategy = 'deepspeed'"),
        ({"betas": (0.9, 1.5)}, r"betas"),
        ({"clip": -1}, r"clip"),
        ({"num_threads": 0}, r"num_threads"),
    ],
)
def test_bad_values_name_field_and_fix(kw, match):
    with pytest.raises(TrainingError, match=match) as err:
        FinetuneConfig(**kw)
    assert "Fix:" in str(err.value)


def test_lora_validation_and_targets():
    with pytest.raises(TrainingError, match=r"lora.r = 0"):
        LoraSettings(r=0)
    with pytest.raises(TrainingError, match=r"dropout"):
        LoraSettings(dropout=1.0)
    assert LoraSettings().targets_for("llama") == ["q_proj", "v_proj"]
    assert LoraSettings().targets_for("gpt2") == ["c_attn"]
    assert LoraSettings().targets_for("brand_new_arch") == "all-linear"
    assert LoraSettings(target_modules="all-linear").targets_for("llama") == "all-linear"
    assert LoraSettings(target_modules=["o_proj"]).targets_for("llama") == ["o_proj"]


def test_to_dict_is_json_and_round_trips():
    for cfg in (
        FinetuneConfig(),
        FinetuneConfig(
            lr=3e-4, schedule="cosine", lora=LoraSettings(r=4, target_modules=("q_proj",))
        ),
    ):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert FinetuneConfig.from_dict(d) == cfg
    assert FinetuneConfig(lora=LoraSettings()).to_dict()["lora.r"] == 8
    assert FinetuneConfig.from_dict({"lora": {"r": 4}}).lora == LoraSettings(r=4)
    with pytest.raises(TrainingError, match=r"no field\(s\) \['learning_rate'\]"):
        FinetuneConfig.from_dict({"learning_rate": 1.0})


def test_every_field_documents_itself():
    import dataclasses

    for cls in (FinetuneConfig, LoraSettings):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_resolved_precision_on_cpu():
    assert FinetuneConfig(accelerator="cpu").resolved_precision() == "32-true"
    assert FinetuneConfig(precision="bf16-mixed").resolved_precision() == "bf16-mixed"


def test_lr_schedule_shapes():
    from training.module import lr_factor

    lin = FinetuneConfig(steps=110, warmup_steps=10, schedule="linear")
    assert lr_factor(0, lin) == pytest.approx(1 / 11) and lr_factor(9, lin) == pytest.approx(
        10 / 11
    )
    assert lr_factor(10, lin) == 1.0 and lr_factor(60, lin) == pytest.approx(0.5)
    assert lr_factor(110, lin) == 0.0
    cos = FinetuneConfig(steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(10, cos) == 1.0 and lr_factor(110, cos) == pytest.approx(0.1)
    assert lr_factor(60, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    vals = [lr_factor(s, cos) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(vals))
