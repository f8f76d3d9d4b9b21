"""The online probe: measure k upstream examples early in training and re-plan the replay.

Usage (normally through `finetune(..., probe=ProbeSpec(...))`)::

    spec = ProbeSpec(examples=probes, nll_before=base_nll, at_fraction=0.1,
                     on_probe=lambda ids, deltas: complete_row_and_sample(ids, deltas))
    trainer = L.Trainer(callbacks=[OnlineProbe(spec, mixture, tokenizer, total_steps=steps)])

This is the reference study's single-fine-tune ("online") variant: train the first
`at_fraction` of the steps with random replay, measure the k probe examples with the model as it
is now, hand their forgetting (NLL now − NLL at the base model) to `on_probe` — the service
plugs in matrix completion + replay sampling there — and train the remaining steps with the
(id, weight) schedule it returns. The switch takes effect at the first stream position of the
next optimizer step, exactly (see mixture.py).

Under DDP/FSDP every rank measures the probes (k is small, and FSDP needs every rank in every
forward), rank 0 calls `on_probe`, and its schedule is broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np

from training.data import Example
from training.errors import TrainingError
from training.mixture import ReplayMixture
from training.nll import measure_nll

OnProbe = Callable[[list[str], np.ndarray], list[tuple[str, float]]]


@dataclass
class ProbeSpec:
    """What to probe, when, and who decides the new replay schedule.

    `nll_before` must be measured on the base model with the job's `max_length`
    (`measure_nll(base, tok, examples, max_length=config.max_length)`): the probes are measured
    mid-training with that length, and examples truncated differently are not comparable.
    """

    examples: list[Example]
    nll_before: np.ndarray
    at_fraction: float = 0.1
    on_probe: OnProbe | None = None  # required; a default only to keep the contract's order
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not callable(self.on_probe):
            raise TrainingError(
                "ProbeSpec.on_probe is missing. Fix: pass a function (ids, deltas) -> "
                "[(upstream id, weight)] that plans the replay from the probe values."
            )
        self.nll_before = np.asarray(self.nll_before, dtype=np.float64)
        if not self.examples:
            raise TrainingError(
                "ProbeSpec.examples is empty. Fix: pass the k probe examples (e.g. 30)."
            )
        if len(self.nll_before) != len(self.examples):
            raise TrainingError(
                f"ProbeSpec: {len(self.examples)} examples but {len(self.nll_before)} base NLLs. "
                "Fix: measure the base model on exactly these examples, in this order."
            )
        if not 0.0 < self.at_fraction < 1.0:
            raise TrainingError(
                f"ProbeSpec.at_fraction = {self.at_fraction} must be in (0, 1). Fix: use 0.1."
            )

    def switch_step(self, total_steps: int) -> int:
        """The optimizer step after which the probes are measured (>= 1, < total when possible)."""
        return min(max(1, round(self.at_fraction * total_steps)), max(1, total_steps - 1))


class OnlineProbe(L.Callback):
    """Measures the probes once, at `spec.switch_step(total_steps)`, and switches the mixture."""

    def __init__(
        self,
        spec: ProbeSpec,
        mixture: ReplayMixture,
        tokenizer: Any,
        *,
        total_steps: int,
        examples_per_step: int,
        max_length: int | None = None,
    ):
        self.spec = spec
        self.mixture = mixture
        self.tokenizer = tokenizer
        self.at_step = spec.switch_step(total_steps)
        self.examples_per_step = examples_per_step  # per device; times world size = global
        self.max_length = max_length
        self.nll_after: np.ndarray | None = None
        self.switched_at_position: int | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.nll_after is not None or trainer.global_step < self.at_step:
            return
        model = pl_module.model
        self.nll_after = measure_nll(
            model,
            self.tokenizer,
            self.spec.examples,
            batch_size=self.spec.batch_size,
            max_length=self.max_length,
            device=None,  # where the strategy put it: moving a model mid-fit would break FSDP
        )
        schedule = None
        if trainer.is_global_zero:
            ids = [e.id for e in self.spec.examples]
            schedule = [
                (str(i), float(w))
                for i, w in self.spec.on_probe(ids, self.nll_after - self.spec.nll_before)
            ]
        schedule = trainer.strategy.broadcast(schedule, src=0)
        # Positions of step s are [s * P, (s + 1) * P) with P = examples per step on all ranks.
        self.switched_at_position = (
            trainer.global_step * self.examples_per_step * trainer.world_size
        )
        self.mixture.switch(schedule, at_position=self.switched_at_position)
        pl_module.log("probe/mean_delta", float(np.nanmean(self.nll_after - self.spec.nll_before)))
