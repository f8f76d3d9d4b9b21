"""What to replay: a held-out set that is never replayed, a budget, and a sampler.

Usage::

    held = heldout_mask(upstream.ids, default_heldout_size(len(upstream.ids)), seed=0)
    budget = replay_budget(len(task.train), 1 / 32)         # int(n * r) + 1
    first = warmup_budget(budget, 0.1)                       # online: the warm-up's part of it
    plan = sample_replay(pred_row, budget, temperature=0.1, exclude=held, seed=0)
    plan.ids(upstream.ids)                                   # [(example id, weight), ...]

Strategies: "softmax" draws `budget` distinct examples sequentially with p ∝ softmax(score / T)
(the reference study's `pred_sample`, T = 0.1); "topk" takes the `budget` highest scores;
"uniform" is random replay. The oracle is not a separate strategy: pass the measured row as
`scores`. Weights are each chosen example's probability under the strategy's distribution over
the candidates (softmax probabilities; 1/n_candidates for uniform), so they sum to ≤ 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forgetting.errors import ForgettingError
from forgetting.probes import gumbel_topk

STRATEGIES = ("softmax", "topk", "uniform")
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def id_hash(example_ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """(N,) uint64 seeded hash of each id: FNV-1a over the UTF-8 bytes, then splitmix64.

    Vectorised over ids (the Python-level loop runs over byte positions, not over examples) and
    independent of platform, process and `PYTHONHASHSEED`, so held-out sets are reproducible.
    """
    if len(example_ids) == 0:
        return np.zeros(0, dtype=np.uint64)
    raw = np.char.encode(np.asarray(list(example_ids), dtype=str), "utf-8")
    width = raw.dtype.itemsize
    data = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(len(raw), width)
    lengths = np.char.str_len(raw).astype(np.uint64)
    h = np.full(len(raw), _FNV_OFFSET ^ _splitmix64(np.array([seed], dtype=np.uint64))[0])
    with np.errstate(over="ignore"):
        for pos in range(width):
            live = lengths > pos  # padding bytes do not enter the hash
            h = np.where(live, (h ^ data[:, pos].astype(np.uint64)) * _FNV_PRIME, h)
        return _splitmix64(h ^ lengths)


def heldout_mask(example_ids: Sequence[str], size: int | float, seed: int = 0) -> np.ndarray:
    """Bool mask of the `size` examples (a count, or a fraction in (0, 1)) with the smallest hash.

    Order-independent, and stable under subsets: an id held out from a set stays held out from
    any subset of it that keeps the same count.
    """
    n = len(example_ids)
    if isinstance(size, float) and not size.is_integer():
        if not 0 < size < 1:
            raise ForgettingError(f"held-out fraction must be in (0, 1), got {size}.")
        count = round(size * n)
    else:
        count = int(size)
    if count < 0 or (count >= max(n, 1) and count > 0):
        raise ForgettingError(
            f"held-out size {count} leaves no examples to replay out of {n}; pass a smaller "
            "count or a fraction such as 0.25."
        )
    if len(set(example_ids)) != n:
        raise ForgettingError("example ids are not unique; deduplicate the upstream set first.")
    mask = np.zeros(n, dtype=bool)
    if count:
        h = id_hash(example_ids, seed)
        mask[np.argpartition(h, count - 1)[:count]] = True
    return mask


def default_heldout_size(n: int) -> int | float:
    """The reference's 10,000 held-out examples when the set is large (N >= 40,000), else 25 %.

    A fixed 10,000 would swallow a small upstream set; a quarter keeps three quarters replayable
    (the prototype world held out 500 of 2,000).
    """
    return 10_000 if n >= 40_000 else 0.25


def replay_budget(n_task: int, ratio: float = 1 / 32) -> int:
    """Number of upstream examples to replay: int(n_task * ratio) + 1 (the reference's rule;
    r = 1/32 by default: one upstream example per 32 task examples)."""
    if n_task < 0 or not np.isfinite(ratio) or ratio < 0:
        raise ForgettingError(
            f"need n_task >= 0 and a finite ratio >= 0, got n_task={n_task}, ratio={ratio}."
        )
    return int(n_task * ratio) + 1


def warmup_budget(budget: int, fraction: float) -> int:
    """The part of a replay budget an online release's warm-up replays (uniformly, before any
    prediction exists): round(budget * fraction), at least 1 (the warm-up's replay slots need an
    example) and at most the budget. The rest of the budget is chosen after the probes, excluding
    the warm-up's examples, so the release replays at most `budget` distinct examples in all."""
    if budget < 0 or not 0 <= fraction <= 1:
        raise ForgettingError(f"need budget >= 0 and fraction in [0, 1], got {budget}, {fraction}.")
    return min(budget, max(1, round(budget * fraction))) if budget else 0


@dataclass(frozen=True)
class ReplayPlan:
    """Chosen columns (draw order for softmax, best-first for topk) and their probabilities."""

    indices: np.ndarray
    weights: np.ndarray
    strategy: str = "softmax"
    temperature: float = 0.1

    def ids(self, example_ids: Sequence[str]) -> list[tuple[str, float]]:
        """(example id, weight) pairs, e.g. for `training.finetune.ReplaySpec.schedule`."""
        return [(example_ids[i], float(w)) for i, w in zip(self.indices, self.weights, strict=True)]


def sample_replay(
    scores: np.ndarray,
    budget: int,
    *,
    temperature: float = 0.1,
    strategy: str = "softmax",
    exclude: np.ndarray | None = None,
    seed: int = 0,
) -> ReplayPlan:
    """Choose `budget` distinct examples to replay; excluded examples are never chosen."""
    if strategy not in STRATEGIES:
        raise ForgettingError(f"unknown replay strategy {strategy!r}; use one of {STRATEGIES}.")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    allowed = np.ones(s.size, dtype=bool)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != s.shape:
            raise ForgettingError(f"exclude mask has shape {ex.shape}, expected {s.shape}.")
        allowed &= ~ex
    if not np.isfinite(s[allowed]).all():
        raise ForgettingError(
            "replay scores contain NaN or inf; predict them (completion) or exclude those examples."
        )
    if not temperature > 0:
        raise ForgettingError(f"temperature must be > 0, got {temperature}.")
    cand = np.flatnonzero(allowed)
    if budget < 0 or budget > cand.size:
        raise ForgettingError(
            f"replay budget {budget} exceeds the {cand.size} replayable examples; lower the "
            "ratio or shrink the held-out set."
        )
    logits = s[cand] / temperature
    if strategy == "uniform":
        pick = np.random.default_rng(seed).choice(cand.size, size=budget, replace=False)
        return ReplayPlan(
            cand[pick], np.full(budget, 1.0 / max(cand.size, 1)), strategy, temperature
        )
    probs = np.exp(logits - logits.max()) if cand.size else logits
    probs = probs / probs.sum() if cand.size else probs
    if strategy == "topk":
        pick = np.argsort(-logits, kind="stable")[:budget]
    else:
        pick = gumbel_topk(logits, budget, np.random.default_rng(seed))
    return ReplayPlan(cand[pick], probs[pick], strategy, temperature)
