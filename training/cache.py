"""On-disk cache of "before" NLLs: a base model's per-example NLL is measured once per example.

Usage::

    from training.cache import NllCache
    cache = NllCache(workspace / "nll", model_key="cl-lm/v3", digest=upstream.digest, max_length=256)
    before = cache.measure(base_model, tok, upstream.examples)   # measures only what is missing
    before_probes = cache.measure(base_model, tok, probes)       # served from disk

For full fine-tuning the "before" NLLs of a release are the same for every task fine-tuned from
it, so the service measures them once per (base model, upstream digest, max_length). The caller
chooses `model_key` (a registry version, a directory plus a content hash...): the cache cannot
tell two different models apart by itself. LoRA jobs need no cache: "before" is the same model
with the adapter disabled (`training.nll.measure_forgetting`).

The file is an .npz of (ids, values), rewritten atomically; a writer merges what is on disk first,
so concurrent workers lose at most their own newest entries (measured again next time).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Example
from training.nll import measure_nll


class NllCache:
    """Per-example NLLs of one model on one upstream set, persisted under `root`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        model_key: str,
        digest: str,
        *,
        max_length: int | None = None,
    ):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)[:60]
        h = hashlib.sha256(f"{model_key}\0{digest}\0{max_length}".encode()).hexdigest()[:12]
        self.path = Path(root) / f"{slug}-{digest}-{h}.npz"
        self.max_length = max_length

    def load(self) -> dict[str, float]:
        """Everything cached so far, {example id: NLL}."""
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return dict(zip(z["ids"].tolist(), z["values"].tolist(), strict=True))
        except (OSError, ValueError, KeyError):  # a torn or foreign file: start again
            return {}

    def _save(self, new: dict[str, float]) -> None:
        merged = {**self.load(), **new}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")
        ids = np.array(list(merged), dtype=str)
        np.savez(tmp, ids=ids, values=np.array(list(merged.values()), dtype=np.float64))
        os.replace(tmp, self.path)

    def measure(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], **kw: Any
    ) -> np.ndarray:
        """NLLs aligned with `examples`; only uncached examples go through the model."""
        known = self.load()
        missing = [e for e in dict.fromkeys(examples) if e.id not in known]
        if missing:
            vals = measure_nll(model, tokenizer, missing, max_length=self.max_length, **kw)
            new = {e.id: float(v) for e, v in zip(missing, vals, strict=True)}
            self._save(new)
            known.update(new)
        return np.array([known[e.id] for e in examples], dtype=np.float64)
