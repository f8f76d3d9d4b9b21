"""The forgetting matrix, assembled from MLflow runs — no second database to keep in sync.

Rows come from FINISHED statistics runs of the model line whose upstream digest matches
(release runs only when asked). Each row's parquet is cached locally by run id.
A row measured on one version is reused by its descendants: each task's row comes from the
nearest version on the lineage of `base_version` (itself, its parent, … the base), so a refreshed
row replaces its ancestor's; rows of other branches only when too few remain, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from forgetting.matrix import ForgettingMatrix, RowMeta
from service.errors import ServiceError
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
    """One row per task: with `base_version`, each task's row measured nearest to it on its
    lineage (the version itself, else its parent, … back to the line's base: the policy that
    docs/results/chain/matrix-policy.md measured — ancestor rows reused, refreshed rows win);
    rows of versions off that lineage only when fewer than `min_rows` remain. Without
    `base_version`, the latest row of every task."""
    kinds = ["stats", "release"] if include_releases else ["stats"]
    runs = []
    for kind in kinds:
        runs += tracker.find_runs({TAG + "kind": kind, TAG + "digest": upstream.digest, TAG + "role": "job"})
    runs = [r for r in runs if r.data.tags.get(TAG + "task") not in exclude_tasks
            and r.data.tags.get(TAG + "row") == "full"]

    def task(r: Any) -> str:
        return r.data.tags.get(TAG + "task", r.info.run_id)

    def latest(rs: list[Any]) -> dict[str, Any]:  # runs come oldest first: the latest wins
        return {task(r): r for r in rs}

    if base_version is None:
        chosen = latest(runs)
        return RowChoice(list(chosen.values()), f"{len(chosen)} rows")
    from service.tracking.lineage import ancestry
    from service.tracking.registry import Registry

    registry = Registry(tracker)
    try:
        line = [v.version for v in ancestry(registry, registry.get(base_version))]
    except ServiceError:  # rows of a version the registry does not hold: those rows alone
        line = [base_version]
    depth = {str(v): i for i, v in enumerate(line)}  # 0 = the version itself
    best: dict[str, Any] = {}
    for r in runs:
        d = depth.get(r.data.tags.get(TAG + "base_version", ""))
        if d is not None and (task(r) not in best or d <= depth[best[task(r)].data.tags[TAG + "base_version"]]):
            best[task(r)] = r
    own = sum(r.data.tags[TAG + "base_version"] == str(base_version) for r in best.values())
    ages = [depth[r.data.tags[TAG + "base_version"]] for r in best.values()]
    note = f"{len(best)} rows measured on version {base_version}" if own == len(best) else (
        f"{len(best)} rows: {own} measured on version {base_version}, {len(best) - own} on its "
        f"ancestors (up to {max(ages)} promotion(s) back)")
    off_line = {t: r for t, r in latest(runs).items() if t not in best}
    if len(best) < min_rows and off_line:
        note = (f"only {len(best)} rows measured on version {base_version} or its ancestors; "
                f"using {len(off_line)} more of this model line measured on other versions too")
        best.update(off_line)
    return RowChoice(list(best.values()), note)


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
