"""The base model's convergence curve: upstream NLL on a fixed sample, measured while pre-training.

Usage::

    from training.world.convergence import eval_sample, UpstreamNLLCurve, converged
    sample = eval_sample(world)                     # 256 upstream chunks, round-robin by source
    cb = UpstreamNLLCurve(tok, sample, every=EVAL_EVERY, total=800)
    finetune(model, tok, examples, cfg, callbacks=[cb])
    cb.curve                                        # [(0, 7.7), (50, 6.4), ..., (800, 3.9)]
    converged(cb.curve)                             # the rule below

The sample is the first chunks of each source of the world's upstream set, taken round-robin
(source 1 chunk 1, source 2 chunk 1, ..., source 1 chunk 2, ...) up to 256. Upstream sets are
balanced prefixes of the shuffled pool, so `default` and `study` (which share one base) get the
same sample. The evaluation never changes the trained weights: `measure_nll` runs in inference
mode, consumes no random numbers, and the callback restores the Python, NumPy and torch RNG
states around it anyway, so the data order and the model are byte-identical with or without it.

Convergence rule: the relative change of the upstream NLL between the last two evaluations
(`every` steps apart, the last at the final step) is below 1%:
|nll[-1] - nll[-2]| / nll[-2] < 0.01.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from training.data import Example

EVAL_CHUNKS = 256
EVAL_EVERY = 50  # optimizer steps between evaluations (plus step 0 and the final step)
CONVERGED_REL_CHANGE = 0.01
RULE = (
    "converged when the upstream NLL changed by less than 1% (relative) between the last two "
    "evaluations"
)

Curve = list[tuple[int, float]]


def eval_sample(world: Any, n: int = EVAL_CHUNKS) -> list[Example]:
    """Up to `n` chunks of the world's upstream set, round-robin over its sources."""
    by_source: dict[str, list[Example]] = {}
    for e in world.upstream.examples:
        by_source.setdefault(e.source, []).append(e)
    queues = list(by_source.values())
    out: list[Example] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return out


def relative_change(curve: Sequence[Sequence[float]]) -> float | None:
    """|last - previous| / previous of the curve's NLL values; None with fewer than 2 points."""
    if len(curve) < 2:
        return None
    prev, last = float(curve[-2][1]), float(curve[-1][1])
    return abs(last - prev) / prev


def converged(curve: Sequence[Sequence[float]]) -> bool | None:
    """The rule of the module docstring; None when the curve has fewer than 2 evaluations."""
    rc = relative_change(curve)
    return None if rc is None else rc < CONVERGED_REL_CHANGE


class UpstreamNLLCurve(L.Callback):
    """Mean NLL of `examples` at step 0, every `every` optimizer steps and at step `total`."""

    def __init__(self, tokenizer: Any, examples: Sequence[Example], every: int, total: int):
        self.tok, self.examples, self.every, self.total = tokenizer, list(examples), every, total
        self.curve: Curve = []
        self.seconds = 0.0  # time spent evaluating

    def _measure(self, model: Any, step: int) -> None:
        import numpy as np
        import torch

        from training.nll import measure_nll

        t0 = time.perf_counter()
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            vals = measure_nll(model, self.tok, self.examples, batch_size=64)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        self.curve.append((step, round(float(np.nanmean(vals)), 4)))
        self.seconds += time.perf_counter() - t0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and not self.curve:
            self._measure(pl_module.model, 0)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        h = pl_module.history
        if not (trainer.is_global_zero and h):
            return
        step = int(h[-1]["step"])
        due = step % self.every == 0 or step == self.total
        if due and (not self.curve or self.curve[-1][0] != step):
            self._measure(pl_module.model, step)


def plot_curves(record: dict[str, Any], path: Path) -> Path:
    """PNG of the train-loss curve and the upstream NLL curve of a pretrain.json record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    if record.get("loss_curve"):
        s, v = zip(*record["loss_curve"], strict=True)
        ax.plot(s, v, label="train loss (mean over window)", color="0.6")
    if record.get("upstream_nll_curve"):
        s, v = zip(*record["upstream_nll_curve"], strict=True)
        ax.plot(s, v, "o-", label=f"upstream NLL ({record.get('eval_chunks', '?')} chunks)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats / token")
    ax.set_title(f"base model of world {record.get('world', '?')}: pre-training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
