"""Write a file or a directory so that readers see the old one or the whole new one, never a torn
half: write to a hidden temporary sibling, then `os.replace` it onto the destination.

Usage::

    with atomic_path(path) as tmp:               # a file
        tmp.write_text(text)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, ids=ids, values=values)      # a handle: numpy would add a suffix to a name
    with atomic_path(model_dir) as tmp:          # a directory: replaces an existing one
        save_model(model, tok, tmp)

The temporary name starts with "." and ends with ".partial" (per process and call), so folder
scans that skip partial files (the inbox) skip it, and two writers never share one. If the block
raises, the temporary is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_name(dest: Path) -> Path:
    """The hidden temporary sibling `atomic_path` writes `dest` through."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def atomic_path(dest: str | os.PathLike[str], *, keep_existing: bool = False) -> Iterator[Path]:
    """A temporary path to write `dest` through; moved onto `dest` when the block succeeds.

    keep_existing: the first writer wins — when `dest` exists by then (another process wrote the
    same content, e.g. a shared download cache), ours is dropped and `dest` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(dest)
    try:
        yield tmp
        if keep_existing and dest.exists():
            return
        if tmp.is_dir() and dest.is_dir():
            # os.replace cannot move a directory onto a non-empty one; a rerun that already
            # produced `dest` is replaced by this run's (the one window where dest is absent).
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """`dest` holds `text`, written atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)
