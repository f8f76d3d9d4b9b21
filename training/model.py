"""Causal LMs: load from a directory, build from a config, wrap with LoRA, save.

Usage::

    from training.model import load_model, build_model, save_model, apply_lora
    model, tok = load_model("models/base")              # a HF dir: safetensors only
    tiny = build_model({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 512}, seed=0)
    peft_model = apply_lora(model, LoraSettings(r=8))    # peft.PeftModel
    save_model(peft_model, tok, "out/adapter")            # the adapter only (small)
    merged = save_model(peft_model, tok, "out/merged", merge=True)  # a plain HF model dir

Only safetensors weights are loaded (a pickle `.bin` can run code) and `trust_remote_code` is off
unless asked. A directory holding a LoRA adapter (`adapter_config.json`) loads its base model from
`base_model_name_or_path` and attaches the adapter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from training.config import LoraSettings
from training.errors import TrainingError

# A config dict without "model_type" is a LLaMA config: the architecture of the tiny test models
# and of the embedded world's base model.
DEFAULT_MODEL_TYPE = "llama"


def context_length(model: Any) -> int | None:
    """The longest sequence the model's positions allow (`max_position_embeddings`), if it says."""
    config = getattr(model, "config", None)
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(n) if n else None


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def load_model(
    path: str | os.PathLike[str],
    *,
    trust_remote_code: bool = False,
    dtype: Any = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local Hugging Face directory.

    Parameters
    ----------
    path : directory with config.json + *.safetensors (+ tokenizer files), or a LoRA adapter dir.
    trust_remote_code : allow the directory's own modelling code (off: it runs arbitrary code).
    dtype : torch dtype of the weights (default float32, which training and measuring expect on CPU).
    device : move the model there (default: stay on CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path).expanduser()
    if not path.is_dir():
        raise TrainingError(
            f"{path}: no such model directory. Fix: pass a directory written by save_pretrained "
            "(config.json + model.safetensors), e.g. one `ftctl world init` or a release produced."
        )
    if (path / "adapter_config.json").exists():
        return _load_adapter(path, trust_remote_code=trust_remote_code, dtype=dtype, device=device)
    if not (path / "config.json").exists():
        raise TrainingError(
            f"{path}: no config.json, so not a model directory. Fix: check the path."
        )
    if not any(path.glob("*.safetensors")):
        bins = sorted(p.name for p in path.glob("*.bin"))
        raise TrainingError(
            f"{path}: no *.safetensors weights{f' (found pickle weights {bins})' if bins else ''}. "
            "Fix: convert once with `model.save_pretrained(dir, safe_serialization=True)` in a "
            "trusted environment; pickle weights are never loaded."
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            dtype=dtype or torch.float32,
        )
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise TrainingError(
                f"{path}: the model needs its own code. Fix: pass trust_remote_code=True "
                "(CLI: --trust-remote-code) if you trust the directory's source."
            ) from None
        raise TrainingError(
            f"{path}: cannot load the model ({e}). Fix: check config.json."
        ) from None
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if device:
        model.to(device)
    return model, tokenizer


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name", as the Hugging Face hub spells it


def fetch_model(name: str, dest: str | os.PathLike[str], *, trust_remote_code: bool = False,
                timeout: float = 10.0) -> Path:
    """Download hub model `name` ("org/name") into `dest` (safetensors, configs, tokenizer; the
    repository's .py files only with `trust_remote_code`) and return `dest`.

    Offline, or with the hub unreachable, it fails within about `timeout` seconds with the fix
    (download where the network allows, pass the directory): nothing is half-written to `dest`.
    """
    from common.atomic import atomic_path

    if not HUB_NAME.match(name):
        raise TrainingError(f"{name!r} is neither a model directory nor a hub name like "
                            "'HuggingFaceTB/SmolLM2-135M'. Fix: check the path or the name.")
    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest  # fetched before: hub snapshots are immutable per name + revision we keep
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    patterns += ["*.py"] if trust_remote_code else []
    try:
        with atomic_path(dest) as tmp:
            snapshot_download(name, local_dir=str(tmp), allow_patterns=patterns,
                              etag_timeout=timeout)
            if not any(tmp.glob("*.safetensors")):
                raise TrainingError(
                    f"hub model {name} has no safetensors weights (pickle weights are never "
                    "loaded). Fix: pick a revision with safetensors, or convert it in a trusted "
                    "environment and pass the directory.")
    except TrainingError:
        raise
    except Exception as e:  # offline, DNS, 401/404: huggingface_hub raises many kinds
        raise TrainingError(
            f"cannot download {name} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}). Fix: where the network allows, run "
            f"`huggingface-cli download {name} --local-dir DIR` (or save_pretrained) and pass "
            "--model DIR.") from None
    return dest


def load_tokenizer(path: str | os.PathLike[str], *, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved in a model directory (no weights loaded)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TrainingError(
            f"{path}: no usable tokenizer ({str(e).splitlines()[0][:200]}). Fix: save the "
            "tokenizer with tokenizer.save_pretrained(dir) next to the model."
        ) from None


def directory_context(path: str | os.PathLike[str]) -> int | None:
    """The context length a model directory's config.json declares, without loading weights."""
    import json

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = config.get("max_position_embeddings") or config.get("n_positions")
    return int(n) if isinstance(n, int) and n > 0 else None


def _load_adapter(path: Path, **kw: Any) -> tuple[Any, Any]:
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise TrainingError(
            f"{path}: LoRA adapter whose base model {base!r} is not a local directory. Fix: "
            "load the base with load_model(base_dir) and attach the adapter with "
            "peft.PeftModel.from_pretrained(model, adapter_dir), or save a merged model."
        )
    model, tokenizer = load_model(base, **kw)
    return PeftModel.from_pretrained(model, str(path), is_trainable=True), tokenizer


def build_model(config: dict[str, Any] | Any, *, seed: int | None = None) -> Any:
    """A randomly initialised causal LM from a config dict or a transformers config object.

    A dict without "model_type" is read as a LlamaConfig (e.g. {"hidden_size": 128,
    "num_hidden_layers": 4, "vocab_size": 2048}); `seed` makes the initialisation reproducible
    without touching the global RNG.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(config, dict):
        d = dict(config)
        model_type = d.pop("model_type", DEFAULT_MODEL_TYPE)
        try:
            config = AutoConfig.for_model(model_type, **d)
        except (ValueError, TypeError) as e:
            raise TrainingError(
                f"model config {config}: {e}. Fix: use transformers config keys."
            ) from None
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap `model` in a peft LoRA model (the base weights are frozen, shared, not copied)."""
    from peft import LoraConfig, get_peft_model

    if _is_peft(model):
        raise TrainingError(
            "the model already carries a LoRA adapter. Fix: merge it first (save_model(..., "
            "merge=True) or merge_lora(model)), or continue training that adapter."
        )
    model_type = getattr(model.config, "model_type", "")
    cfg = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.targets_for(model_type),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:
        raise TrainingError(
            f"LoRA targets {cfg.target_modules} do not fit this {model_type!r} model ({e}). "
            "Fix: set LoraSettings(target_modules=...) to its linear layer names, or 'all-linear'."
        ) from None


def merge_lora(model: Any) -> Any:
    """The adapter folded into the base weights, as a plain transformers model.

    peft's `merge_and_unload()` returns a NEW object and leaves the PeftModel unusable: keep the
    return value and drop the old reference.
    """
    return model.merge_and_unload() if _is_peft(model) else model


def save_model(
    model: Any, tokenizer: Any, path: str | os.PathLike[str], *, merge: bool = False
) -> Any:
    """Save a Hugging Face directory (safetensors); return the model that was saved.

    A LoRA model saves its adapter only (adapter_config.json + adapter_model.safetensors), unless
    `merge=True`: then the merged plain model is saved and returned (the PeftModel passed in is
    consumed; use the returned model from then on). The tokenizer is saved alongside.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if merge:
        model = merge_lora(model)
    model.save_pretrained(str(path), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return model
