"""The replay mixture: the task stream with upstream examples interleaved at ratio r.

Usage::

    mix = ReplayMixture(task_examples, encode, pad_id=tok.eos_token_id, ratio=1 / 32,
                        pool=upstream.as_pool(), schedule=[(id, 1.0), ...], exclude_ids=heldout)
    loader = mix.loader(total=steps * batch_size * grad_accum, batch_size=batch_size)
    batch = mix.collate(next(iter(loader)).tolist())   # dict of padded tensors
    mix.switch(new_schedule, at_position=p)            # the online variant, mid-training
    mix.consumed                                       # upstream ids that went into batches

The stream is a sequence of positions 0, 1, 2, ... Position p is a replay slot iff
floor((p + 1) q) > floor(p q) with q = r / (1 + r): exactly one replay example after every 1/r
task examples (r = 1/32: 32 task, 1 replay, ...), and floor(T q) replay slots among the first T
positions. That is the reference study's mixture; its training length is extended by (1 + r),
which the caller does when it chooses `steps`.

Task slots walk through the task examples in a seeded permutation per epoch. Replay slots walk
through the current schedule in passes: each pass visits every scheduled id once, in a seeded
order drawn without replacement with probability proportional to the weight (Efraimidis–Spirakis
keys). So a schedule that is the whole pool with softmax weights gives a weighted sample without
replacement, and a schedule of pre-sampled ids replays each of them in turn.

Positions are resolved into examples when a batch is *consumed* (the LightningModule calls
`collate` from `on_before_batch_transfer`), not when the DataLoader prefetches it. That is what
lets the probe callback switch the schedule at an exact step, and what makes `consumed` the ids
that really went into training batches. Held-out ids are refused, always.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from training.data import Example, pad_batch
from training.errors import TrainingError

Encoded = tuple[list[int], list[int]]  # (input ids, labels)


@dataclass(frozen=True)
class _Segment:
    start_slot: int  # first replay slot this schedule serves
    ids: tuple[str, ...]
    weights: np.ndarray
    index: int  # segment number: part of the RNG seed


def replay_fraction(ratio: float) -> Fraction:
    """q = r / (1 + r): the share of stream positions that are replay slots."""
    r = Fraction(ratio).limit_denominator(1_000_000)
    return r / (1 + r)


def count_replay_slots(total: int, ratio: float) -> int:
    """Replay slots among the first `total` positions: floor(total * r / (1 + r))."""
    return math.floor(total * replay_fraction(ratio))


class ReplayMixture:
    """Task examples plus a switchable replay schedule, resolved position by position.

    Parameters
    ----------
    task : the task's training examples (encoded once, up front).
    encode : Example -> (input ids, labels); replay examples are encoded lazily and cached.
    pad_id : token id for padding (padded positions get attention 0 and label -100).
    ratio : replay examples per task example (0 = no replay).
    pool : {upstream id: Example} the schedule may draw from.
    schedule : [(upstream id, weight)]; weights are relative, >= 0, at least one > 0.
    exclude_ids : held-out ids: a schedule naming one is refused.
    seed : seeds the task order and the replay order.
    encode_replay : encoder for pool examples (default: `encode`); e.g. always left-truncating.
    """

    def __init__(
        self,
        task: Sequence[Example],
        encode: Callable[[Example], Encoded],
        *,
        pad_id: int,
        ratio: float = 0.0,
        pool: Mapping[str, Example] | None = None,
        schedule: Sequence[tuple[str, float]] = (),
        exclude_ids: frozenset[str] | set[str] = frozenset(),
        seed: int = 0,
        encode_replay: Callable[[Example], Encoded] | None = None,
    ):
        if not task:
            raise TrainingError("no task examples to train on. Fix: pass a non-empty train set.")
        if not (ratio >= 0 and math.isfinite(ratio)):
            raise TrainingError(f"replay ratio {ratio} must be >= 0. Fix: use e.g. 1/32, or 0.")
        if ratio > 0 and not schedule:
            raise TrainingError(
                f"replay ratio {ratio} but an empty schedule. Fix: pass (upstream id, weight) "
                "pairs (e.g. a random sample of the non-held-out pool), or ratio 0."
            )
        if ratio == 0 and schedule:
            raise TrainingError(
                "a replay schedule with ratio 0 would never be used. Fix: set ratio > 0."
            )
        self.encode_replay = encode_replay or encode
        self.pad_id = int(pad_id)
        self.ratio = float(ratio)
        self.q = replay_fraction(ratio)
        self.pool: Mapping[str, Example] = pool or {}
        self.exclude_ids = frozenset(exclude_ids)
        self.seed = int(seed)
        self._task = [encode(e) for e in task]
        self._task_perm: dict[int, np.ndarray] = {}
        self._cache: dict[str, Encoded] = {}
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self._segments: list[_Segment] = []
        self.consumed: list[str] = []  # replay ids in the order they entered batches
        self.positions_consumed = 0
        if schedule:
            self._segments.append(self._segment(schedule, start_slot=0, index=0))

    # -- the schedule ---------------------------------------------------------------------------
    def _segment(
        self, schedule: Sequence[tuple[str, float]], start_slot: int, index: int
    ) -> _Segment:
        ids, weights = [], []
        for pair in schedule:
            try:
                uid, w = pair
                w = float(w)
            except (TypeError, ValueError):
                raise TrainingError(
                    f"replay schedule entry {pair!r} is not (id, weight). Fix: pass pairs."
                ) from None
            if uid in self.exclude_ids:
                raise TrainingError(
                    f"replay schedule names held-out example {uid}: held-out examples measure "
                    "forgetting and must never be replayed. Fix: drop it from the candidates "
                    "(forgetting.replay.sample_replay(..., exclude=heldout_mask(...)))."
                )
            if uid not in self.pool:
                raise TrainingError(
                    f"replay schedule names {uid!r}, which is not in the replay pool. Fix: use ids "
                    "of the same upstream set (same digest)."
                )
            if not (w >= 0 and math.isfinite(w)):
                raise TrainingError(
                    f"replay weight {w} for {uid} must be finite and >= 0. Fix: clip it."
                )
            ids.append(uid)
            weights.append(w)
        if len(set(ids)) != len(ids):
            raise TrainingError("replay schedule lists an id twice. Fix: merge duplicate entries.")
        keep = [i for i, w in enumerate(weights) if w > 0]
        if not keep:
            raise TrainingError(
                "replay schedule has no positive weight. Fix: give some ids weight > 0."
            )
        return _Segment(
            start_slot, tuple(ids[i] for i in keep), np.asarray([weights[i] for i in keep]), index
        )

    @property
    def schedule_ids(self) -> tuple[str, ...]:
        """The ids of the schedule in force for the next replay slot."""
        return self._segments[-1].ids if self._segments else ()

    def switch(self, schedule: Sequence[tuple[str, float]], *, at_position: int) -> None:
        """Serve replay slots from `at_position` on with a new schedule (validated like the first)."""
        if self.ratio == 0:
            raise TrainingError(
                "cannot switch the replay schedule of a mixture without replay. Fix: set ratio > 0."
            )
        slot = count_replay_slots(at_position, self.ratio)
        if self._segments and slot < self._segments[-1].start_slot:
            raise TrainingError(f"cannot switch back in time to position {at_position}.")
        seg = self._segment(schedule, start_slot=slot, index=len(self._segments))
        if self._segments and self._segments[-1].start_slot == slot:
            self._segments[-1] = seg
        else:
            self._segments.append(seg)

    # -- positions → examples -------------------------------------------------------------------
    def is_replay(self, p: int) -> bool:
        return math.floor((p + 1) * self.q) > math.floor(p * self.q)

    def _task_at(self, t: int) -> Encoded:
        epoch, i = divmod(t, len(self._task))
        perm = self._task_perm.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 0, epoch]).permutation(len(self._task))
            self._task_perm = {epoch: perm}  # one epoch at a time: the stream moves forward
        return self._task[int(perm[i])]

    def replay_id_at(self, slot: int) -> str:
        """The upstream id served by replay slot `slot` under the schedules set so far."""
        seg = next(s for s in reversed(self._segments) if s.start_slot <= slot)
        n_pass, i = divmod(slot - seg.start_slot, len(seg.ids))
        order = self._orders.get((seg.index, n_pass))
        if order is None:
            rng = np.random.default_rng([self.seed, 1, seg.index, n_pass])
            keys = rng.exponential(size=len(seg.ids)) / seg.weights  # smallest first ∝ weight
            order = np.argsort(keys, kind="stable")
            self._orders = {(seg.index, n_pass): order}
        return seg.ids[int(order[i])]

    def example_at(self, p: int) -> tuple[str | None, Encoded]:
        """(upstream id or None for a task slot, encoded example) at stream position p."""
        if self.ratio > 0 and self.is_replay(p):
            uid = self.replay_id_at(math.floor(p * self.q))
            enc = self._cache.get(uid)
            if enc is None:
                enc = self._cache[uid] = self.encode_replay(self.pool[uid])
            return uid, enc
        return None, self._task_at(p - math.floor(p * self.q))

    def collate(self, positions: Sequence[int]) -> dict[str, Any]:
        """Resolve positions into a right-padded batch and record the replayed ids."""
        items = [self.example_at(int(p)) for p in positions]
        input_ids, mask, labels = pad_batch([enc for _, enc in items], self.pad_id)
        replayed = [uid for uid, _ in items if uid is not None]
        self.consumed.extend(replayed)
        self.positions_consumed += len(items)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "n_replay": len(replayed),
        }

    def loader(self, total: int, batch_size: int) -> Any:
        """A DataLoader of stream positions 0..total-1 (Lightning shards it across ranks)."""
        from torch.utils.data import DataLoader

        return DataLoader(range(total), batch_size=batch_size, shuffle=False)
