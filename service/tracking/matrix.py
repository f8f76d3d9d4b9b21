"""The forgetting matrix, assembled from MLflow runs — no second database to keep in sync.

Rows come from FINISHED statistics runs of the model line whose upstream digest matches
(release runs only when asked). Each row's parquet is cached locally by run id.
Rows are comparable only within one base model: by default only rows measured on `base_version`
are used; when there are too few, rows measured on its ancestors are added and the caller is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from forgetting.matrix import ForgettingMatrix, RowMeta
from service.tracking.store import TAG, Tracker


class Columns(Protocol):
    """The upstream set's columns, as the matrix needs them (pipeline.inputs.Upstream is one)."""

    @property
    def ids(self) -> list[str]: ...

    @property
    def digest(self) -> str: ...


@dataclass
class AssembledMatrix:
    matrix: ForgettingMatrix
    note: str  # how the rows were chosen, shown to the user and tagged on the run


def assemble(
    tracker: Tracker,
    upstream: Columns,
    *,
    base_version: int | None = None,
    min_rows: int = 1,
    include_releases: bool = False,
    exclude_tasks: frozenset[str] = frozenset(),
) -> AssembledMatrix:
    kinds = ["stats", "release"] if include_releases else ["stats"]
    runs = []
    for kind in kinds:
        runs += tracker.find_runs({TAG + "kind": kind, TAG + "digest": upstream.digest, TAG + "role": "job"})
    runs = [r for r in runs if r.data.tags.get(TAG + "task") not in exclude_tasks
            and r.data.tags.get(TAG + "row") == "full"]
    same_base = [r for r in runs if base_version is None
                 or r.data.tags.get(TAG + "base_version") == str(base_version)]
    chosen, note = same_base, (f"{len(same_base)} rows measured on version {base_version}"
                               if base_version is not None else f"{len(same_base)} rows")
    if base_version is not None and len(same_base) < min_rows and len(runs) > len(same_base):
        chosen = runs
        note = (f"only {len(same_base)} rows measured on version {base_version}; using "
                f"{len(runs)} rows of this model line measured on earlier versions too")
    # One row per task: the latest finished run wins (a re-collected task replaces its old row).
    latest: dict[str, Any] = {}
    for r in chosen:
        latest[r.data.tags.get(TAG + "task", r.info.run_id)] = r
    rows = []
    for task, r in latest.items():
        df = tracker.load_row(r.info.run_id)
        meta = RowMeta(key=r.info.run_id, task=task,
                       base_model=r.data.tags.get(TAG + "base_version", ""),
                       run_id=r.info.run_id,
                       extra={"family": r.data.tags.get(TAG + "family", "")},
                       digest=r.data.tags.get(TAG + "digest", ""))
        rows.append((meta, df["example_id"].tolist(), df["delta"].to_numpy()))
    matrix = ForgettingMatrix.from_rows(rows, digest=upstream.digest, example_ids=upstream.ids)
    return AssembledMatrix(matrix=matrix, note=note)
