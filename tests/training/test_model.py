"""Model directories: build / save / load round trips, LoRA adapters and merging, refusals."""

from __future__ import annotations

import pytest
import torch

from training.config import LoraSettings
from training.errors import TrainingError
from training.model import apply_lora, build_model, load_model, merge_lora, save_model

from .conftest import TINY, tiny_model


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250]])


def test_build_is_seeded_and_save_load_is_exact(tmp_path, tok):
    a, b = tiny_model(tok, seed=1), tiny_model(tok, seed=1)
    assert torch.equal(logits(a, IDS), logits(b, IDS))
    assert not torch.equal(logits(a, IDS), logits(tiny_model(tok, seed=2), IDS))
    save_model(a, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    m, t = load_model(tmp_path / "m")
    assert torch.equal(logits(m, IDS), logits(a, IDS)) and t.eos_token_id == tok.eos_token_id


def test_build_from_other_architecture(tok):
    gpt2 = build_model(
        {
            "model_type": "gpt2",
            "n_embd": 32,
            "n_layer": 1,
            "n_head": 2,
            "vocab_size": 300,
            "bos_token_id": 0,
            "eos_token_id": 0,
        },
        seed=0,
    )
    assert gpt2.config.model_type == "gpt2" and logits(gpt2, IDS).shape == (1, 6, 300)


def test_lora_adapter_save_load_and_merge(tmp_path, tok):
    base = tiny_model(tok)
    save_model(base, tok, tmp_path / "base")
    base, _ = load_model(tmp_path / "base")
    peft_model = apply_lora(base, LoraSettings(r=4, dropout=0.0))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # make the adapter do something (B starts at zero)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    want = logits(peft_model, IDS)
    save_model(peft_model, tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    again, _ = load_model(tmp_path / "adapter")  # base from adapter_config, then the adapter
    assert torch.allclose(logits(again, IDS), want, atol=1e-5)
    with pytest.raises(TrainingError, match=r"already carries a LoRA adapter"):
        apply_lora(again, LoraSettings())
    merged = save_model(peft_model, tok, tmp_path / "merged", merge=True)
    assert not hasattr(merged, "peft_config") and torch.allclose(
        logits(merged, IDS), want, atol=1e-5
    )
    plain, _ = load_model(tmp_path / "merged")
    assert torch.allclose(logits(plain, IDS), want, atol=1e-5)
    assert merge_lora(plain) is plain


def test_bad_lora_targets(tok):
    with pytest.raises(TrainingError, match=r"do not fit this 'llama' model.*target_modules"):
        apply_lora(tiny_model(tok), LoraSettings(target_modules=("no_such_layer",)))


def test_load_refusals(tmp_path, tok):
    with pytest.raises(TrainingError, match=r"no such model directory"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match=r"no config.json"):
        load_model(tmp_path / "empty")
    m = tiny_model(tok)
    save_model(m, tok, tmp_path / "pickle")
    (tmp_path / "pickle" / "model.safetensors").unlink()
    torch.save(m.state_dict(), tmp_path / "pickle" / "pytorch_model.bin")
    with pytest.raises(
        TrainingError, match=r"no \*.safetensors weights \(found pickle.*never loaded"
    ):
        load_model(tmp_path / "pickle")
    assert TINY["num_hidden_layers"] == 2


def test_remote_code_is_refused_unless_asked(tmp_path, tok):
    import json

    d = tmp_path / "custom"
    save_model(tiny_model(tok), tok, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "ftctl_custom"
    cfg["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomModel",
    }
    (d / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    for name in ("configuration_custom.py", "modeling_custom.py"):
        (d / name).write_text(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\n")
    with pytest.raises(
        TrainingError, match=r"needs its own code.*Fix: pass trust_remote_code=True"
    ):
        load_model(d)
    assert not marker.exists()  # the directory's code never ran
