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


@dataclass(frozen=True)
class RowChoice:
    """Which logged rows make the matrix, decided from run metadata alone (no row is loaded):
    enough to key a cached fit, so a release on an unchanged matrix never reads the rows."""

    runs: list[Any]  # one FINISHED mlflow Run per task, the latest
    note: str

    @property
    def keys(self) -> list[str]:
        return [r.info.run_id for r in self.runs]

    def only(self, keys: list[str]) -> RowChoice:
        keep = set(keys)
        return RowChoice([r for r in self.runs if r.info.run_id in keep],
                         f"{len(keep)} rows chosen when the release began")


def choose_rows(
    tracker: Tracker,
    upstream: Columns,
    *,
    base_version: int | None = None,
    min_rows: int = 1,
    include_releases: bool = False,
    exclude_tasks: frozenset[str] = frozenset(),
) -> RowChoice:
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
    return RowChoice(list(latest.values()), note)


def load_rows(tracker: Tracker, upstream: Columns, choice: RowChoice) -> AssembledMatrix:
    """The chosen rows as one float32 matrix, read one row at a time (bounded memory)."""

    def rows() -> Any:
        for r in choice.runs:
            df = tracker.load_row(r.info.run_id)
            meta = RowMeta(key=r.info.run_id, task=r.data.tags.get(TAG + "task", r.info.run_id),
                           base_model=r.data.tags.get(TAG + "base_version", ""),
                           run_id=r.info.run_id,
                           extra={"family": r.data.tags.get(TAG + "family", "")},
                           digest=r.data.tags.get(TAG + "digest", ""))
            yield meta, df["example_id"].to_numpy(dtype=object), df["delta"].to_numpy()
            del df

    matrix = ForgettingMatrix.from_rows(rows(), digest=upstream.digest, example_ids=upstream.ids,
                                        n_rows=len(choice.runs))
    return AssembledMatrix(matrix=matrix, note=choice.note)


def assemble(tracker: Tracker, upstream: Columns, **choose: Any) -> AssembledMatrix:
    """The forgetting matrix of the line: `choose_rows` (see its options), then `load_rows`."""
    return load_rows(tracker, upstream, choose_rows(tracker, upstream, **choose))
