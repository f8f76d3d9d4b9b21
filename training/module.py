"""The LightningModule for causal-LM fine-tuning (full or LoRA) and pre-training.

Usage (normally through `training.finetune.finetune`)::

    module = CausalLMModule(model, FinetuneConfig(lr=3e-4, steps=100), mixture)
    trainer.fit(module, mixture.loader(total, batch_size))
    module.history   # [{"step", "loss", "lr", "tokens", "replay"}] one per optimizer step

The loss is the mean NLL over all target tokens of the micro-batch (labels -100 carry none),
as in the reference study's HF Trainer. AdamW with weight decay on matrices only (not on biases
and norm weights); the learning rate warms up linearly over `warmup_steps` and then decays,
linearly or along a cosine, to `lr * min_lr_ratio` at `steps`. Clipping, accumulation and
precision are the Trainer's (see finetune.py).

The DataLoader yields stream *positions*; `on_before_batch_transfer` turns them into token
batches through the mixture at the moment a batch is consumed (see mixture.py for why).
"""

from __future__ import annotations

import math
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
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Decay matrices (weights, embeddings), not biases or norm gains: the usual AdamW recipe.
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=c.lr, betas=c.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, c))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
