"""The LightningModule for causal-LM fine-tuning (full or LoRA) and pre-training.

Usage (normally through `training.finetune.finetune`)::

    module = CausalLMModule(model, FinetuneConfig(lr=3e-4, steps=100), mixture)
    trainer.fit(module, mixture.loader(total, batch_size))
    module.history   # [{"step", "loss", "lr", "tokens", "replay"}] one per optimizer step

The loss is the mean NLL over all target tokens of the micro-batch (labels -100 carry none),
as in the reference study's HF Trainer. AdamW with weight decay on matrices only (not on biases
and norm weights: `decay_groups`, by parameter name, so FSDP's flattened 1-D shards are split
the same way as the unsharded model); the learning rate warms up linearly over `warmup_steps` and then decays,
linearly or along a cosine, to `lr * min_lr_ratio` at `steps`. Clipping, accumulation and
precision are the Trainer's (see finetune.py).

The DataLoader yields stream *positions*; `on_before_batch_transfer` turns them into token
batches through the mixture at the moment a batch is consumed (see mixture.py for why).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from training.config import FinetuneConfig
from training.data import IGNORE


def lr_factor(step: int, config: FinetuneConfig) -> float:
    """Multiplier of `config.lr` for optimizer step `step` (0-based)."""
    warm = config.warmup_steps
    if step < warm:
        return (step + 1) / (warm + 1)  # never exactly 0: the first step already learns
    progress = min(1.0, (step - warm) / max(1, config.steps - warm))
    if config.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


# Wrapper segments FSDP, activation checkpointing, torch.compile and DDP put into parameter names.
_WRAPPERS = re.compile(
    r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|module)\."
)
# Biases and the gains of every norm (LayerNorm / RMSNorm, GPT-2's ln_1 / ln_f, embedding norms).
_NO_DECAY = re.compile(r"(^|[._])bias$|norm|(^|\.)ln(_[a-z0-9]+)?\.", re.IGNORECASE)


def clean_name(name: str) -> str:
    """A parameter name without wrapper segments: the same before and after FSDP wrapping."""
    while True:
        cleaned = _WRAPPERS.sub(r"\1", name)
        if cleaned == name:
            return name
        name = cleaned


def no_decay_rules(named_parameters: Iterable[tuple[str, Any]]) -> dict[str, bool]:
    """{clean name: True if the parameter gets no weight decay}, read off the unsharded model.

    Called at module construction, before any strategy wraps the model, this is the classic
    split exactly (no decay for `p.dim() < 2`: biases, norm gains), recorded by name so that
    it survives FSDP, whose flattened shards are all 1-D (or empty). A parameter already inside
    an FSDP wrapper (its shape is gone) is judged by name: biases and norms (`_NO_DECAY`).
    """
    rules = {}
    for n, p in named_parameters:
        c = clean_name(n)
        rules[c] = bool(_NO_DECAY.search(c)) if c != n else p.dim() < 2
    return rules


def decay_groups(
    named_parameters: Iterable[tuple[str, Any]], weight_decay: float, rules: dict[str, bool]
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: with / without weight decay (empty dropped).

    `rules` (from `no_decay_rules`) decides by name; a name it does not know is judged by
    `_NO_DECAY` (bias, norm), never by its current shape, which FSDP may have flattened.
    """
    decay, plain = [], []
    for n, p in named_parameters:
        if p.requires_grad:
            c = clean_name(n)
            skip = rules[c] if c in rules else bool(_NO_DECAY.search(c))
            (plain if skip else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def token_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean NLL over the target tokens of a batch (logits at t predict labels at t + 1)."""
    targets = labels[:, 1:].reshape(-1)
    n = int((targets != IGNORE).sum())
    flat = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    if n == 0:  # every target truncated away: a zero loss that still has a graph
        return flat.sum() * 0.0, 0
    return F.cross_entropy(flat, targets, ignore_index=IGNORE, reduction="sum") / n, n


class CausalLMModule(L.LightningModule):
    """Trains `model` on batches from `mixture` with the optimiser and schedule of `config`."""

    def __init__(self, model: Any, config: FinetuneConfig, mixture: Any = None):
        super().__init__()
        self.model = model
        self.config = config
        self.mixture = mixture
        self.history: list[dict[str, float]] = []
        self._pending: list[tuple[float, int, int]] = []  # (loss, tokens, replayed) per micro-batch
        # Shapes are read here, before any strategy wraps or shards the model.
        self._no_decay = no_decay_rules(model.named_parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.mixture is not None and torch.is_tensor(batch) and batch.dim() == 1:
            return self.mixture.collate(batch.tolist())
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss, _ = token_mean_loss(logits, batch["labels"])
        tokens = int(batch["attention_mask"].sum())
        self._pending.append((float(loss.detach()), tokens, int(batch.get("n_replay", 0))))
        self.log(
            "train/loss", loss, on_step=True, prog_bar=True, batch_size=len(batch["input_ids"])
        )
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Runs the closure (the step's last training_step) and the step itself; recording here,
        # before any callback's on_train_batch_end, lets callbacks see this step's entry.
        super().optimizer_step(*args, **kwargs)
        if not self._pending:
            return
        losses, tokens, replayed = zip(*self._pending, strict=True)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the lr this step used
        self.history.append(
            {
                "step": len(self.history) + 1,
                "loss": sum(losses) / len(losses),
                "lr": lr,
                "tokens": sum(tokens),
                "replay": sum(replayed),
            }
        )
        self._pending.clear()
        self.log("train/lr", lr, on_step=True)

    def configure_optimizers(self) -> Any:
        c = self.config
        # Decay matrices (weights, embeddings), not biases or norm gains: the usual AdamW recipe.
        groups = decay_groups(self.model.named_parameters(), c.weight_decay, self._no_decay)
        opt = torch.optim.AdamW(groups, lr=c.lr, betas=c.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, c))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
