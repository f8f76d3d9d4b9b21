"""The completion model a release folds its probes into: the requested method fitted on the
matrix besides the new task (or an explained fallback), cached in the workspace by its rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.atomic import atomic_path
from service.pipeline.inputs import Upstream
from service.settings import Settings
from service.tracking.matrix import RowChoice, choose_rows, load_rows
from service.tracking.store import Tracker


@dataclass
class Completion:
    """The completion model a release uses, and how it was chosen."""

    model: Any  # a fitted forgetting.completion.Completer; None for the `random` fallback
    method: str  # the method used
    note: str  # how the rows were chosen (and why it fell back), shown to the user
    fallback: str | None  # why the requested method was not used; None = it was
    rows: list[str]  # the run ids of the rows it was fitted on (empty for `random`)


def completer(settings: Settings, tracker: Tracker, upstream: Upstream, method: str,
              parent_version: int, task_name: str = "",
              rows: list[str] | None = None) -> Completion:
    """The requested method fitted on the rows of the matrix besides this task, or an explained
    fallback when the matrix has too few rows for it.

    Fits are cached by (method, the exact rows, upstream digest) in the workspace: the stages of
    one release and every release on an unchanged matrix share one fit, and the scheduled refit
    (service/dist/beat.py) computes it ahead of the next release.
    """
    from forgetting.completion import make_completer
    from service.pipeline.predict import make_method

    comp = make_method(settings, method, upstream)
    choice = known_rows(tracker, upstream, parent_version, comp.min_rows, task_name, rows)
    n, note = len(choice.runs), choice.note
    why = None
    if n < comp.min_rows:
        fallback = "additive" if n >= make_completer("additive").min_rows else "random"
        why = f"{method} needs {comp.min_rows} known rows, the matrix has {n}"
        note = f"{why} ({note}); fell back to {fallback}. Collect more with `ftctl stats collect`"
        method = fallback
        comp = make_completer(fallback) if fallback != "random" else None
    if comp is not None:
        comp = _fit_cached(settings, comp, method, tracker, upstream, choice)
    return Completion(model=comp, method=method, note=note, fallback=why, rows=choice.keys)


def known_rows(tracker: Tracker, upstream: Upstream, parent_version: int, min_rows: int,
               task_name: str = "", rows: list[str] | None = None) -> RowChoice:
    """The rows a release completes from: the matrix besides its own task — or exactly the rows
    (run ids) `begin` chose, so that statistics jobs finishing mid-release change nothing."""
    choice = choose_rows(tracker, upstream, base_version=parent_version, min_rows=min_rows,
                         exclude_tasks=frozenset({task_name}) if task_name else frozenset())
    return choice if rows is None else choice.only(rows)


def _fit_cached(settings: Settings, comp: Any, method: str, tracker: Tracker, upstream: Upstream,
                choice: RowChoice) -> Any:
    """The fit on exactly these rows, from the workspace cache when it is there (keyed by the
    run ids: no row is read then), else fitted now and cached."""
    import hashlib
    import pickle

    blob = f"{method}|{upstream.digest}|{'|'.join(sorted(choice.keys))}|{comp.config!r}"
    path = settings.cache_dir / "completers" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.pkl"
    if path.exists():
        try:
            with path.open("rb") as f:  # written by this workspace's own jobs (below)
                return pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            path.unlink(missing_ok=True)  # a stale or torn file: refit
    comp.fit(load_rows(tracker, upstream, choice).matrix.values)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        pickle.dump(comp, f, protocol=pickle.HIGHEST_PROTOCOL)
    return comp
