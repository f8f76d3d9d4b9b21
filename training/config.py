"""Fine-tuning configuration: the one object `finetune()` runs and MLflow logs.

Usage::

    from training.config import FinetuneConfig, LoraSettings
    cfg = FinetuneConfig(lr=3e-4, steps=200, batch_size=8, lora=LoraSettings(r=16))
    cfg.to_dict()            # flat JSON-able dict, logged verbatim as run parameters

Every field documents itself in `metadata["help"]` (read with `dataclasses.fields`), next to
its default, so the meaning of a logged parameter is found where the field is defined.
Validation happens in `__post_init__`: a bad value raises `TrainingError` naming the field and
a valid range. No torch import at module level: `ftctl --help` must stay fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from training.errors import TrainingError

SCHEDULES = ("linear", "cosine")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
STRATEGIES = ("auto", "ddp", "fsdp")
ACCELERATORS = ("auto", "cpu", "gpu")

# LoRA targets per `config.model_type` when none are given: the attention projections, as in the
# reference study (q_proj/v_proj on OLMo-hf, Wqkv on MPT). Anything else gets "all-linear".
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "olmo": ("q_proj", "v_proj"),
    "olmo2": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
    "gpt2": ("c_attn",),
    "gpt_neox": ("query_key_value",),
    "falcon": ("query_key_value",),
    "bloom": ("query_key_value",),
    "mpt": ("Wqkv",),
}


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings (peft). `target_modules=None` picks per-architecture defaults."""

    r: int = _help("LoRA rank.", default=8)
    alpha: float = _help("LoRA scaling numerator (scale = alpha / r).", default=16.0)
    dropout: float = _help("Dropout on the LoRA input, in [0, 1).", default=0.05)
    target_modules: tuple[str, ...] | None = _help(
        "Module names to adapt; None = the architecture's attention projections "
        "(training.config.LORA_TARGETS), or 'all-linear' for unknown architectures.",
        default=None,
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise TrainingError(f"lora.r = {self.r} must be >= 1. Fix: use a rank like 8 or 16.")
        if self.alpha <= 0:
            raise TrainingError(f"lora.alpha = {self.alpha} must be > 0. Fix: use e.g. 2 * r.")
        if not 0.0 <= self.dropout < 1.0:
            raise TrainingError(f"lora.dropout = {self.dropout} must be in [0, 1). Fix: use 0.05.")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):  # a single name or "all-linear"
                object.__setattr__(self, "target_modules", (self.target_modules,))
            elif not self.target_modules:
                raise TrainingError(
                    "lora.target_modules is empty. Fix: leave it None for the per-architecture "
                    "default, or name modules such as ('q_proj', 'v_proj')."
                )
            else:
                object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def targets_for(self, model_type: str) -> list[str] | str:
        """The target modules for a model of `model_type` (peft's `target_modules` argument)."""
        if self.target_modules is not None:
            t = list(self.target_modules)
            return "all-linear" if t == ["all-linear"] else t
        return list(LORA_TARGETS.get(model_type, ())) or "all-linear"


@dataclass(frozen=True)
class FinetuneConfig:
    """How one fine-tuning (or pre-training) job runs. Defaults suit a small model on a CPU."""

    lr: float = _help("Peak learning rate of AdamW.", default=1e-4)
    steps: int = _help(
        "Optimizer steps (max_steps). With replay the caller extends them by (1 + ratio).",
        default=100,
    )
    batch_size: int = _help("Examples per micro-batch and device.", default=8)
    grad_accum: int = _help("Micro-batches accumulated per optimizer step.", default=1)
    warmup_steps: int = _help("Linear warm-up steps from 0 to lr.", default=10)
    schedule: Literal["linear", "cosine"] = _help(
        "Decay after warm-up: 'linear' or 'cosine', from lr down to lr * min_lr_ratio.",
        default="linear",
    )
    min_lr_ratio: float = _help("Final learning rate as a fraction of lr, in [0, 1].", default=0.0)
    weight_decay: float = _help(
        "AdamW weight decay (not applied to biases and norm weights).", default=0.0
    )
    betas: tuple[float, float] = _help("AdamW betas.", default=(0.9, 0.999))
    clip: float = _help("Gradient-norm clipping threshold; 0 disables clipping.", default=1.0)
    precision: str = _help(
        "Lightning precision: 'auto' (bf16-mixed on a bf16-capable GPU, 32-true on CPU), "
        "'32-true', 'bf16-mixed', 'bf16-true' or '16-mixed'.",
        default="auto",
    )
    accelerator: str = _help("'auto', 'cpu' or 'gpu'.", default="auto")
    strategy: str = _help(
        "Lightning strategy: 'auto' (one device), 'ddp' or 'fsdp' (several GPUs of one machine; "
        "launch the job under torchrun, since Lightning's own launcher re-executes the command).",
        default="auto",
    )
    devices: int = _help("Devices (GPUs, or CPU processes) this job uses.", default=1)
    seed: int = _help("Seed for initialisation, data order and replay order.", default=0)
    max_length: int = _help(
        "Longest sequence in tokens; longer examples are left-truncated (the end is kept).",
        default=1024,
    )
    num_threads: int | None = _help(
        "torch CPU threads for this job; None leaves torch's setting alone.", default=None
    )
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass (less memory, ~30% slower).", default=False
    )
    log_every: int = _help("Log train metrics to the logger every this many steps.", default=1)
    lora: LoraSettings | None = field(
        default=None,
        metadata={"help": "LoRA settings; None = full fine-tuning of every parameter."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # from to_dict()/JSON
            object.__setattr__(self, "lora", LoraSettings(**self.lora))
        object.__setattr__(self, "betas", tuple(self.betas))
        self._check()

    def _check(self) -> None:
        def bad(name: str, why: str, fix: str) -> TrainingError:
            return TrainingError(
                f"FinetuneConfig.{name} = {getattr(self, name)!r} {why}. Fix: {fix}."
            )

        if not self.lr > 0:
            raise bad("lr", "must be > 0", "use e.g. 1e-4 (LoRA) or 2e-5 (full fine-tuning)")
        for name in ("steps", "batch_size", "grad_accum", "devices", "max_length", "log_every"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1", "use a positive integer")
        if self.max_length < 2:
            raise bad("max_length", "must be >= 2 (one token predicts the next)", "use e.g. 512")
        if not 0 <= self.warmup_steps <= self.steps:
            raise bad("warmup_steps", f"must be in [0, steps={self.steps}]", "lower warmup_steps")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"is not one of {SCHEDULES}", "pick 'linear' or 'cosine'")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "must be in [0, 1]", "use 0.0 or e.g. 0.1")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0", "use 0.0 or e.g. 0.01")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "must be two numbers in [0, 1)", "use (0.9, 0.999)")
        if self.clip < 0:
            raise bad("clip", "must be >= 0 (0 disables clipping)", "use 1.0")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"is not one of {PRECISIONS}", "use 'auto'")
        if self.accelerator not in ACCELERATORS:
            raise bad("accelerator", f"is not one of {ACCELERATORS}", "use 'auto'")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"is not one of {STRATEGIES}", "use 'auto', 'ddp' or 'fsdp'")
        if self.num_threads is not None and self.num_threads < 1:
            raise bad("num_threads", "must be >= 1 or None", "use None or the cores to use")
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise bad("lora", "is not a LoraSettings", "pass LoraSettings(...) or None")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def examples_per_step(self) -> int:
        """Examples per optimizer step on one device (batch_size * grad_accum)."""
        return self.batch_size * self.grad_accum

    def resolved_precision(self) -> str:
        """'auto' made concrete: bf16-mixed where a bf16-capable GPU is used, else 32-true."""
        if self.precision != "auto":
            return self.precision
        import torch

        gpu = self.accelerator != "cpu" and torch.cuda.is_available()
        return "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"

    def resolved_accelerator(self) -> str:
        if self.accelerator != "auto":
            return self.accelerator
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-able dict (LoRA settings as `lora.r`, ...), e.g. for MLflow params."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "lora":
                out["lora"] = v is not None
                if v is not None:
                    for lf in dataclasses.fields(v):
                        lv = getattr(v, lf.name)
                        out[f"lora.{lf.name}"] = list(lv) if isinstance(lv, tuple) else lv
            else:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        """Inverse of `to_dict` (also accepts a nested `lora` dict). Unknown keys are an error."""
        d = dict(d)
        lora: Any = d.pop("lora", None)
        lora_kw = {k.split(".", 1)[1]: d.pop(k) for k in list(d) if k.startswith("lora.")}
        if isinstance(lora, dict):
            lora_kw.update(lora)
            lora = True
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(
                f"FinetuneConfig has no field(s) {unknown}. Fix: use only {sorted(names)}."
            )
        if lora_kw.get("target_modules") is not None:
            lora_kw["target_modules"] = tuple(lora_kw["target_modules"])
        return cls(**d, lora=LoraSettings(**lora_kw) if (lora or lora_kw) else None)

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
