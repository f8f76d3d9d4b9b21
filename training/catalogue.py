"""A user's task catalogue: a directory of task datasets, one task per entry.

    tasks/
      tasks.toml          optional: [sentiment] family = "classification", description = "…"
      sentiment.jsonl     a task file (JSONL / JSON / CSV / parquet): name = the file's stem
      summarise/          a task directory: train.jsonl + test.jsonl, or a save_to_disk dir

Usage::

    from training.catalogue import load_catalogue
    cat = load_catalogue("tasks/")          # {name: CatalogueTask(name, path, family, description)}
    load_task(cat["sentiment"].path)        # the data itself, read when a job needs it

Only names and paths are read here (the data is read by `training.data.load_task` when a job
uses the task), so listing a catalogue of large datasets is instant.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from training.errors import TrainingError
from training.readers import FILE_KINDS

MANIFEST = "tasks.toml"


@dataclass(frozen=True)
class CatalogueTask:
    name: str
    path: str
    family: str = ""
    description: str = ""


def _entries(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.name == MANIFEST:
            continue
        if p.is_file() and p.suffix.lower() in FILE_KINDS:
            name = p.stem
        elif p.is_dir():
            name = p.name
        else:
            continue
        if name in out:
            raise TrainingError(f"{root}: two tasks named {name!r} ({out[name].name}, {p.name}). "
                                "Fix: rename one of them.")
        out[name] = p
    return out


def load_catalogue(root: str | os.PathLike[str]) -> dict[str, CatalogueTask]:
    """The catalogue in `root` (name = file stem or directory name; family and description
    from an optional tasks.toml)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TrainingError(f"{root}: no such task directory. Fix: pass a directory of task files "
                            "(one .jsonl/.json/.csv/.parquet file or folder per task).")
    entries = _entries(root)
    if not entries:
        raise TrainingError(f"{root}: no task files. Fix: put one .jsonl/.json/.csv/.parquet file "
                            "(or a folder with train/test files) per task there.")
    meta: dict[str, object] = {}
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            meta = tomllib.loads(manifest.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise TrainingError(f"{manifest}: not valid TOML ({e}). Fix: one [task_name] table "
                                'per task with family = "…" and description = "…".') from None
        unknown = sorted(set(meta) - set(entries))
        if unknown:
            raise TrainingError(f"{manifest}: tables {unknown} name no task file in {root} "
                                f"(tasks: {', '.join(entries)}). Fix: rename the tables or files.")
    out = {}
    for name, path in entries.items():
        info = meta.get(name, {})
        if not isinstance(info, dict) or set(info) - {"family", "description"}:
            raise TrainingError(f"{manifest}: [{name}] may set family and description only.")
        out[name] = CatalogueTask(name, str(path.resolve()), str(info.get("family", "")),
                                  str(info.get("description", "")))
    return out
