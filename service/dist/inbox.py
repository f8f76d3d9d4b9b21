"""The inbox of task datasets that the scheduler turns into releases (pure file operations).

Ready items sit in the folder itself; `processing/` holds the one being released, `done/` and
`failed/` the rest (a failed item gets `<name>.error.txt` with the reason). Names starting with
"." or ending in .tmp/.partial are ignored (still being copied), as is anything modified in the
last `SETTLE_SECONDS`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, write_text
from service.errors import ServiceError

SUBDIRS = ("processing", "done", "failed")


POINTER = ".task.json"


SETTLE_SECONDS = 2.0



@dataclass(frozen=True)
class Inbox:
    """The inbox folder (pure file operations; no broker)."""

    root: Path

    @classmethod
    def of(cls, settings: Any, dist: Any) -> Inbox:
        return cls(Path(dist.inbox) if dist.inbox else settings.workspace.resolve() / "inbox")

    def ensure(self) -> Inbox:
        for d in SUBDIRS:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        return self

    def add(self, data: str, *, method: str = "", mode: str = "") -> Path:
        """Copy a dataset (file or folder) in atomically, or write a pointer to a task name/URI."""
        self.ensure()
        src = Path(data)
        opts = {k: v for k, v in (("method", method), ("mode", mode)) if v}
        if src.exists() and not opts:
            dst = self._free(src.name)
            with atomic_path(dst) as tmp:
                if src.is_dir():
                    shutil.copytree(src, tmp)
                else:
                    shutil.copy2(src, tmp)
                os.utime(tmp)  # the copy is new: settle timing starts now
            return dst
        task = str(src.resolve()) if src.exists() else data
        return write_text(self._free(f"{src.stem or 'task'}{POINTER}"),
                          json.dumps({"task": task, **opts}))

    def _free(self, name: str) -> Path:
        """A name not yet used in the inbox or its subfolders (a same-named dataset added twice
        is two items)."""
        for i in range(10_000):
            cand = name if i == 0 else f"{Path(name).stem}-{i}{''.join(Path(name).suffixes)}"
            if not any((d / cand).exists() for d in (self.root, *(self.root / s for s in SUBDIRS))):
                return self.root / cand
        raise ServiceError(f"too many items named {name} in {self.root}; clean up done/")

    def ready(self, now: float | None = None) -> list[Path]:
        """Items ready to release, oldest first."""
        now = time.time() if now is None else now
        if not self.root.exists():
            return []
        items = [p for p in self.root.iterdir()
                 if p.name not in SUBDIRS and not p.name.startswith(".")
                 and not p.name.endswith((".tmp", ".partial"))
                 and now - p.stat().st_mtime >= SETTLE_SECONDS]
        return sorted(items, key=lambda p: (p.stat().st_mtime, p.name))

    def claim(self, item: Path) -> Path:
        self.ensure()
        dst = self.root / "processing" / item.name
        os.replace(item, dst)
        return dst

    def finish(self, item: Path, ok: bool, note: str = "") -> Path:
        self.ensure()
        dst = self.root / ("done" if ok else "failed") / item.name
        if item.exists():
            os.replace(item, dst)
        if note:
            dst.with_name(dst.name + (".result.json" if ok else ".error.txt")).write_text(note)
        return dst

    @staticmethod
    def request_for(item: Path) -> dict[str, Any]:
        """The ReleaseRequest fields an item stands for."""
        if item.name.endswith(POINTER):
            try:
                spec = json.loads(item.read_text())
            except json.JSONDecodeError as e:
                raise ServiceError(f"inbox pointer {item.name} is not JSON ({e}); write "
                                   '{"task": "NAME-OR-PATH"}') from None
            if not isinstance(spec, dict) or not spec.get("task"):
                raise ServiceError(f'inbox pointer {item.name} needs a "task" field')
            unknown = set(spec) - {"task", "method", "mode"}
            if unknown:
                raise ServiceError(f"inbox pointer {item.name}: unknown fields {sorted(unknown)}; "
                                   "allowed: task, method, mode")
            return spec
        return {"task": str(item)}

