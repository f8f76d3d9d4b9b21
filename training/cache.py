"""On-disk cache of "before" NLLs: a base model's per-example NLL is measured once per example.

Usage::

    from training.cache import NllCache
    cache = NllCache(workspace / "nll", model_key="cl-lm/v3", digest=upstream.digest, max_length=256)
    before = cache.measure(base_model, tok, upstream.examples)   # measures only what is missing
    before_probes = cache.measure(base_model, tok, probes)       # served from disk
    cache.put(ids, values)           # values measured elsewhere (e.g. shards, merged)
    cache.get(upstream.examples)     # all values, aligned; None when any is not cached

For full fine-tuning the "before" NLLs of a release are the same for every task fine-tuned from
it, so the service measures them once per base model and upstream digest. The caller chooses
`model_key` (a registry version, a directory plus a content hash...): the cache cannot tell two
different models apart by itself. LoRA jobs need no cache: "before" is the same model with the
adapter disabled (`with model.disable_adapter(): measure_nll(model, ...)`).

The file name hashes everything that changes the values: the model key, the digest, the
evaluator's code version (`training.nll.EVALUATOR_VERSION`, bumped when measure_nll's numbers
change), and the measurement settings (max_length, chat_template, add_eos, the weights' dtype
and whether bf16 autocast is used: `precision`). Values measured one way are never served for
another: the settings are fixed when the cache is made, `measure` refuses a conflicting keyword
and a model of another dtype. The device is resolved like `measure_nll`'s "auto" at
construction (a GPU when there is one), so the precision part of the key is known before any
model is loaded.

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

from common.atomic import atomic_path
from training import nll
from training.data import Example
from training.errors import TrainingError
from training.nll import measure_nll, resolve_device


class NllCache:
    """Per-example NLLs of one model on one upstream set, persisted under `root`.

    Parameters
    ----------
    root, model_key, digest : where, which model, which upstream set.
    max_length, chat_template, add_eos, bf16 : passed to `measure_nll` (and part of the key).
    device : "auto" (a GPU when there is one), "cpu" or "cuda[:n]"; decides the precision.
    dtype : the dtype of the weights measured (`load_model` gives float32).
    """

    SETTINGS = ("max_length", "chat_template", "add_eos", "bf16", "device")

    def __init__(
        self,
        root: str | os.PathLike[str],
        model_key: str,
        digest: str,
        *,
        max_length: int | None = None,
        chat_template: bool = True,
        add_eos: bool = True,
        bf16: bool = True,
        device: str = "auto",
        dtype: str = "float32",
    ):
        import torch

        if device is None:
            raise TrainingError(
                "NllCache(device=None): the precision would depend on where each model sits. "
                "Fix: use 'auto', 'cpu' or 'cuda'."
            )
        self.max_length, self.chat_template, self.add_eos = max_length, chat_template, add_eos
        self.bf16, self.device, self.dtype = bf16, device, str(dtype).removeprefix("torch.")
        _, autocast = resolve_device(torch.device("cpu"), device, bf16)
        self.precision = f"{self.dtype}{'+bf16-autocast' if autocast else ''}"
        # Read at construction (not imported as a name) so that a bumped version, or a test's
        # monkeypatch of training.nll, reaches every cache made afterwards.
        self.evaluator_version = int(nll.EVALUATOR_VERSION)
        parts = (model_key, digest, max_length, chat_template, add_eos, self.precision)
        key = "\0".join(str(x) for x in (*parts, f"evaluator-v{self.evaluator_version}"))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)[:60]
        h = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.path = Path(root) / f"{slug}-{digest}-{h}.npz"

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
        ids = np.array(list(merged), dtype=str)
        with atomic_path(self.path) as tmp, tmp.open("wb") as f:
            np.savez(f, ids=ids, values=np.array(list(merged.values()), dtype=np.float64))

    def _check_settings(self, kw: dict[str, Any]) -> None:
        for name in self.SETTINGS:
            if name in kw and kw[name] != getattr(self, name):
                raise TrainingError(
                    f"NllCache.measure({name}={kw[name]!r}) but the cache holds values measured "
                    f"with {name}={getattr(self, name)!r}. Fix: make a separate NllCache(..., "
                    f"{name}={kw[name]!r}) for that setting."
                )

    def _check_model(self, model: Any) -> None:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        if dtype != self.dtype:
            raise TrainingError(
                f"NllCache for {self.dtype} weights, but the model is {dtype}. Fix: make the "
                f"cache with NllCache(..., dtype={dtype!r}), or load the model in {self.dtype}."
            )

    def measure(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], **kw: Any
    ) -> np.ndarray:
        """NLLs aligned with `examples`; only uncached examples go through the model.

        `kw` goes to `measure_nll` (batch_size, progress); the cache's own settings may be
        repeated with the same value, not changed.
        """
        self._check_settings(kw)
        known = self.load()
        missing = [e for e in dict.fromkeys(examples) if e.id not in known]
        if missing:
            self._check_model(model)
            settings = {name: getattr(self, name) for name in self.SETTINGS}
            vals = measure_nll(model, tokenizer, missing, **{**kw, **settings})
            new = {e.id: float(v) for e, v in zip(missing, vals, strict=True)}
            self._save(new)
            known.update(new)
        return np.array([known[e.id] for e in examples], dtype=np.float64)

    def get(self, examples: Sequence[Example]) -> np.ndarray | None:
        """Cached NLLs aligned with `examples`, or None when any of them is not cached yet.

        Reads only; nothing is measured. For "use the cache if it is complete, else measure"
        call `measure`, which measures just the missing examples.
        """
        known = self.load()
        if any(e.id not in known for e in examples):
            return None
        return np.array([known[e.id] for e in examples], dtype=np.float64)

    def put(self, ids: Sequence[str], values: np.ndarray, *, complete: bool = False) -> None:
        """Store NLLs measured elsewhere (e.g. shards merged by the service), one per id.

        The values must have been measured with this cache's model and settings: the cache
        cannot check that. They must be finite: NaN is how a merge marks an unmeasured gap, and
        a stored NaN would be served as a measurement from then on — unless `complete`: the
        values are one whole `measure_nll` result (another cache's), whose NaN means "no target
        token", a measurement like any other (as `measure` stores it).
        """
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim != 1 or vals.shape[0] != len(ids):
            raise TrainingError(
                f"NllCache.put: {len(ids)} ids but values of shape {vals.shape}. Fix: pass one "
                "value per id, in the same order (a 1-D array)."
            )
        bad = ~np.isfinite(vals) if not complete else np.isinf(vals)
        if bad.any():
            first = [str(ids[i]) for i in np.flatnonzero(bad)[:3]]
            raise TrainingError(
                f"NllCache.put: {int(bad.sum())} value(s) are NaN or inf (ids {first}...). Fix: "
                "measure those examples again (NllCache.measure) and put only measured values."
            )
        if len(ids):
            self._save({str(i): float(v) for i, v in zip(ids, vals, strict=True)})
