"""Lineage keys: what identifies a model version's measurements and a plain fine-tune, and the
rule that rows are comparable only within one upstream set.

    model_key(version)          the NLL cache key of a registered version (its registering run)
    check_digest(...)           refuse to mix upstream sets within a model line
    train_key(...)              identity of a plain (no-replay) fine-tune: same key, same model
    plain_row(...)              the full row of a finished plain fine-tune with that key
    ancestry(registry, version) the version and its ancestors, newest first (the line's chain)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.tracking.jobs import job_id_for
from service.tracking.registry import Registry, Version
from service.tracking.store import TAG, Tracker


def model_key(version: Version) -> str:
    """Cache key of a version's upstream NLLs: its registering run, unique across lines."""
    return f"run-{version.run_id}"


def check_digest(model_line: str, parent: Version, digest: str, source: str) -> None:
    """Rows are comparable only within one upstream set: refuse to mix digests. `source` names
    where this process's upstream set comes from (for the message)."""
    line_digest = parent.tags.get(TAG + "digest")
    if line_digest and line_digest != digest:
        raise ServiceError(
            f"model line {model_line!r} version {parent.version} was measured on upstream "
            f"set {line_digest[:12]} but {source} has {digest[:12]}; use "
            "the upstream set the line was initialised with, or start a new line with --model-line")


def check_encoding(model_line: str, base: Version, encoding: str) -> None:
    """Rows are comparable only within one encoding of the examples (max_length, chat template):
    refuse a line's data under another one."""
    recorded = base.tags.get(TAG + "encoding")
    if recorded and recorded != encoding:
        raise ServiceError(
            f"model line {model_line!r} encodes examples with {recorded}; this asks for "
            f"{encoding}. Rows of the two are not comparable. Fix: keep the line's settings, or "
            "start a new line with --model-line NAME")


def train_key(task_digest: str, parent_version: int, finetune: Mapping[str, Any], digest: str,
              model_line: str) -> str:
    """Identity of a plain (no-replay) fine-tune of a task from a parent with one recipe and seed
    (`finetune` is the FinetuneConfig as a dict): statistics jobs and no-replay releases with the
    same key trained the same model."""
    return job_id_for("train", task=task_digest, parent=parent_version, config=dict(finetune),
                      digest=digest, line=model_line)


def plain_row(tracker: Tracker, key: str, ids: Sequence[str],
              digest: str) -> tuple[np.ndarray, str] | None:
    """ΔNLL of every upstream example (in `ids` order) after a finished plain fine-tune with this
    train key (a statistics job, or a no-replay release that measured everything), with its run id."""
    runs = [r for r in tracker.find_runs({TAG + "train_key": key, TAG + "role": "job"})
            if r.data.tags.get(TAG + "row") == "full" and r.data.tags.get(TAG + "digest") == digest]
    if not runs:
        return None
    df = tracker.load_row(runs[-1].info.run_id).set_index("example_id")
    if not set(ids) <= set(df.index):
        return None
    return df.loc[list(ids), "delta"].to_numpy(np.float64), runs[-1].info.run_id


def row_delta(tracker: Tracker, run_id: str, ids: Sequence[str]) -> np.ndarray:
    """ΔNLL of a logged row in `ids` order (NaN where the row did not measure an example)."""
    df = tracker.load_row(run_id).set_index("example_id")
    return df["delta"].reindex(list(ids)).to_numpy(np.float64)


def ancestry(registry: Registry, version: Version) -> list[Version]:
    """`version` and its ancestors by parent_version tags, newest first; the last is the base
    (registered by `ftctl init`, parent "none"). A broken link (a deleted version) ends the walk."""
    out = [version]
    seen = {version.version}
    while True:
        parent = out[-1].tags.get(TAG + "parent_version", "none")
        if not parent.isdigit() or int(parent) in seen:
            return out
        try:
            out.append(registry.get(int(parent)))
        except ServiceError:  # a version removed from the registry ends the chain
            return out
        seen.add(out[-1].version)
