"""What a job works on: the upstream set (with its held-out split), task data, model
directories and the cached "before" NLLs of a model version.

The embedded world provides the upstream set and named tasks; any path or dataset name that
`training.data.load_task` accepts works as a task too.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.settings import Settings
from service.tracking.lineage import check_digest
from service.tracking.registry import Registry, Version
from service.tracking.store import Tracker


@dataclass
class Upstream:
    """The upstream examples whose forgetting is measured, in a fixed column order."""

    examples: list[Any]  # training.data.Example
    digest: str
    heldout: np.ndarray  # bool per column: never replayed, the evaluation set
    source: str = ""  # where the set comes from, for messages (e.g. "world 'default'")

    @cached_property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @cached_property
    def sources(self) -> list[str]:
        return [e.source for e in self.examples]

    @cached_property
    def texts(self) -> dict[str, str]:
        return {e.id: (e.prompt + e.response) for e in self.examples}

    @cached_property
    def by_id(self) -> dict[str, Any]:
        return {e.id: e for e in self.examples}

    @property
    def n(self) -> int:
        return len(self.examples)


@dataclass
class Task:
    name: str
    train: list[Any]
    test: list[Any]
    digest: str
    family: str = ""
    description: str = ""
    embedded: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def load_world(settings: Settings) -> Any:
    from training.world import WORLDS
    from training.world import load_world as _load

    try:
        return _load(settings.world)
    except (KeyError, ValueError) as e:
        raise ServiceError(f"{e}; choose a world with `ftctl init --world {'|'.join(WORLDS)}`") from None


def heldout_size(settings: Settings, n: int) -> float:
    """The held-out size in force for an upstream set of n examples (a count or a fraction)."""
    from forgetting.replay import default_heldout_size

    return settings.heldout or float(default_heldout_size(n))


def line_recipe(settings: Settings) -> dict[str, Any]:
    """The fine-tuning recipe the line suggests: a world preset's (tuned to its base model), or
    none for a line of your own data (FinetuneConfig's defaults, then the settings)."""
    if settings.upstream:
        return {}
    return dict(load_world(settings).base_model_spec.finetune)


@dataclass(frozen=True)
class Encoding:
    """How the line turns an example into tokens, for training and for measuring alike: rows
    measured with another encoding are not comparable, so `ftctl init` records it."""

    max_length: int  # tokens kept per example (the last ones), at most the model's context
    chat_template: bool  # instruction prompts through the tokenizer's chat template (if it has one)
    refuse_long: bool  # a task example longer than max_length is an error, not truncated

    def describe(self) -> str:
        return f"max_length={self.max_length} chat_template={'auto' if self.chat_template else 'none'}"

    def task_config(self) -> Any:
        from training.data import TaskDataConfig

        return TaskDataConfig(max_length=self.max_length, chat_template=self.chat_template,
                              truncation="error" if self.refuse_long else "left")

    def nll_options(self) -> dict[str, Any]:
        """The keyword arguments of training.nll.measure_nll (and NllCache) for this encoding."""
        return {"max_length": self.max_length, "chat_template": self.chat_template}


def encoding(settings: Settings) -> Encoding:
    """The line's encoding: the settings' max_length, else the world recipe's, else 1024."""
    length = settings.max_length or int(line_recipe(settings).get("max_length", 1024))
    return Encoding(length, settings.chat_template == "auto", settings.long_records == "refuse")


def load_model_for(settings: Settings, model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """A model of this line (training.model.load_model with the line's trust_remote_code)."""
    from training.errors import TrainingError
    from training.model import load_model

    try:
        return load_model(model_dir, trust_remote_code=settings.trust_remote_code)
    except TrainingError as e:
        raise ServiceError(str(e)) from None


def _stamp(path: str) -> tuple[tuple[str, int, int], ...]:
    """What identifies the files' contents cheaply: name, size and mtime of each file."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file())
    return tuple((str(q), q.stat().st_size, q.stat().st_mtime_ns) for q in files)


@functools.lru_cache(maxsize=2)
def _user_upstream(path: str, stamp: tuple[tuple[str, int, int], ...]) -> Any:
    """A user's upstream set, read once per process while its files are unchanged (every stage
    of every job loads it; a set of 10^6 records is read once)."""
    from training.errors import TrainingError
    from training.upstream import read_upstream

    if not stamp:
        raise ServiceError(f"upstream set {path}: no such file or directory. Fix: check the path "
                           "given to `ftctl init --upstream` (recorded in ftctl.toml)")
    try:
        return read_upstream(path).upstream
    except TrainingError as e:
        raise ServiceError(str(e)) from None


def load_upstream(settings: Settings) -> Upstream:
    from forgetting.replay import heldout_mask

    if settings.upstream:
        up = _user_upstream(settings.upstream, _stamp(settings.upstream))
        source = f"upstream set {settings.upstream}"
    else:
        up, source = load_world(settings).upstream, f"world {settings.world!r}"
    size = heldout_size(settings, len(up.examples))
    if size >= 1 and size >= len(up.examples):
        raise ServiceError(
            f"heldout={size:g} leaves no upstream example to replay (the set has "
            f"{len(up.examples)}); use a fraction such as 0.25"
        )
    mask = heldout_mask(up.ids, int(size) if size >= 1 else size, seed=settings.heldout_seed)
    return Upstream(examples=list(up.examples), digest=up.digest, heldout=mask, source=source)


@dataclass
class JobContext:
    """What every job starts from: the line's tracking store, the version it builds on and the
    upstream set, checked to be the one the line was measured on."""

    tracker: Tracker
    registry: Registry
    parent: Version
    upstream: Upstream


def job_context(settings: Settings, parent_version: int = 0) -> JobContext:
    """The job's context; `parent_version` 0 = the current @champion."""
    tracker = Tracker(settings)
    registry = Registry(tracker)
    parent = registry.get(parent_version) if parent_version else registry.champion()
    upstream = load_upstream(settings)
    check_digest(settings.model_line, parent, upstream.digest, upstream.source)
    return JobContext(tracker, registry, parent, upstream)


def catalogue(settings: Settings) -> dict[str, Any]:
    """The line's tasks by name: your catalogue (training.catalogue.CatalogueTask), or the
    world's tasks (training.world TaskInfo); both have name, family and description."""
    if settings.tasks:
        from training.catalogue import load_catalogue
        from training.errors import TrainingError

        try:
            return dict(load_catalogue(settings.tasks))
        except TrainingError as e:
            raise ServiceError(str(e)) from None
    return dict(load_world(settings).tasks)


def resolve_task(settings: Settings, ref: str) -> Task:
    """A task of the line's catalogue by name, or anything `training.data.load_task` takes
    (a path, a dataset)."""
    from training.data import load_task
    from training.errors import TrainingError

    tasks = catalogue(settings)
    if settings.tasks and ref in tasks:
        entry = tasks[ref]
        try:
            data = load_task(entry.path, encoding(settings).task_config())
        except TrainingError as e:
            raise ServiceError(str(e)) from None
        return _checked(ref, Task(name=entry.name, train=list(data.train), test=list(data.test),
                                  digest=data.digest, family=entry.family,
                                  description=entry.description))
    if not settings.tasks and ref in tasks:  # a world preset's task
        t = tasks[ref]
        return Task(name=t.name, train=list(t.train), test=list(t.test), digest=t.digest,
                    family=t.family, description=t.description, embedded=True)
    looks_like_path = os.sep in ref or Path(ref).suffix or Path(ref).exists()
    if not looks_like_path:
        close = sorted(n for n in tasks if ref.split("_")[0] in n)[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ServiceError(
            f"unknown task {ref!r}{hint}: give a task name from `ftctl tasks list` "
            "or a path to JSONL/CSV/parquet task data"
        )
    try:
        data = load_task(ref, encoding(settings).task_config())
    except TrainingError as e:
        raise ServiceError(str(e)) from None
    return _checked(ref, Task(name=data.name, train=list(data.train), test=list(data.test),
                              digest=data.digest))


# Fewer examples than this cannot give a task loss worth gating on, nor a row worth completing
# from: such data is refused before any run opens, so it never reaches the matrix.
MIN_TRAIN_EXAMPLES = 8
MIN_TEST_EXAMPLES = 2


def _checked(ref: str, task: Task) -> Task:
    if len(task.train) < MIN_TRAIN_EXAMPLES or len(task.test) < MIN_TEST_EXAMPLES:
        raise ServiceError(
            f"task {ref!r} has {len(task.train)} train and {len(task.test)} test examples; ftctl "
            f"needs at least {MIN_TRAIN_EXAMPLES} to train on and {MIN_TEST_EXAMPLES} to measure "
            "the task loss. Fix: add examples (about 10% of a single file is held out as the test "
            "split), or give a `test` split of its own")
    return task


def nll_cache(settings: Settings, key: str, upstream: Upstream) -> Any:
    """The one NLL cache of this workspace (training.cache.NllCache) for model `key` on this
    upstream set: keyed by the model, the upstream digest, the measurement settings, the weights'
    precision and the evaluator's code version, so a value is never served for another setup."""
    from training.cache import NllCache

    return NllCache(settings.cache_dir / "nll", key, upstream.digest, **encoding(settings).nll_options())


def load_or_measure_nll(settings: Settings, key: str, upstream: Upstream, model_dir: Path,
                        progress: Any = None) -> np.ndarray:
    """NLL of every upstream example under model `key` ("before" for the jobs built on it):
    served from the cache, measuring only what it lacks."""
    cache = nll_cache(settings, key, upstream)
    cached = cache.get(upstream.examples)
    if cached is not None:
        return cached
    model, tok = load_model_for(settings, model_dir)
    return cache.measure(model, tok, upstream.examples, progress=progress)
