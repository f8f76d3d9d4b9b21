"""Reading task data: rows from JSONL / JSON / CSV / parquet files, directories, `datasets`.

Usage::

    from training.readers import read_rows
    splits = read_rows("data/task.jsonl")   # {"": [("data/task.jsonl: line 1", {...}), ...]}
    splits = read_rows("data/task_dir")     # {"train": [...], "test": [...]} (one split per file)

Every row comes with a label ("file: line n", "file: row i") so that validation errors name the
row. Files are parsed here rather than through `datasets` so that those labels are exact line
numbers, nothing is written to a cache, and bad UTF-8 is located to its line. `save_to_disk`
directories and hub names go through `datasets`.

A hub name is tried only when the hub is reachable, because `datasets` retries DNS and HTTP for
15-45 s before it gives up. With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set we fail at once;
otherwise one TCP connection to the hub (or to the HTTPS proxy) is attempted with a 2 s budget,
DNS included (`hub_reachable`). FTCTL_HUB_CHECK=0 skips that probe (a network where direct
connections fail but `datasets` still gets through). A source that looks like a path (starts
with ./ ../ / ~, ends in a data-file suffix, or has an existing parent directory, e.g. a
mistyped `data/tsak`) is never sent to the hub: it fails with "no such file or directory".
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from training.errors import TrainingError

FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
Rows = dict[str, list[tuple[str, Any]]]  # {split name ('' = unsplit): [(row label, row)]}


def _check_utf8(path: Path) -> None:
    """Name the line of the first invalid UTF-8 byte (pyarrow / json would just say 'invalid')."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TrainingError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}). Fix: re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    _check_utf8(path)
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}: line {n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainingError(
                    f"{path}: line {n} is not valid JSON ({e.msg} at column {e.colno}). "
                    "Fix: one JSON object per line (JSONL)."
                ) from None


def _read_json(path: Path) -> Rows:
    """A JSON list of rows, or an object {split name: list of rows}."""
    _check_utf8(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TrainingError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}). Fix: a JSON list of objects, "
            "or one object per line in a .jsonl file."
        ) from None
    if isinstance(data, list):
        return {"": [(f"{path}: row {i}", r) for i, r in enumerate(data)]}
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return {k: [(f"{path}: {k} row {i}", r) for i, r in enumerate(v)] for k, v in data.items()}
    raise TrainingError(
        f"{path}: expected a JSON list of objects or {{split: [objects]}}, got "
        f"{type(data).__name__}. Fix: write a list of objects (or JSONL)."
    )


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    _check_utf8(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield f"{path}: line {reader.line_num}", row


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt/non-parquet file
        raise TrainingError(f"{path}: cannot read as parquet ({e}). Fix: check the file.") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}: row {i}", row


def _read_file(path: Path) -> Rows:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind == "json":
        return _read_json(path)
    if kind == "jsonl":
        return {"": list(_read_jsonl(path))}
    if kind == "csv":
        return {"": list(_read_csv(path))}
    if kind == "parquet":
        return {"": list(_read_parquet(path))}
    raise TrainingError(
        f"{path}: unsupported file type {path.suffix!r}. Fix: use one of "
        f"{sorted(FILE_KINDS)} or a datasets.save_to_disk directory."
    )


def _read_hf(ds: Any, label: str) -> Rows:
    """A datasets Dataset or DatasetDict → {split: rows}."""
    from datasets import Dataset

    splits = {"": ds} if isinstance(ds, Dataset) else dict(ds)
    return {
        k: [(f"{label}: {k or 'rows'} row {i}", r) for i, r in enumerate(d)]
        for k, d in splits.items()
    }


# -- row validation (shared by data.rows_to_examples) ----------------------------------------


def row_field(row: Any, name: str, where: str, hint: str) -> str:
    """Field `name` of `row` as text, or a TrainingError naming the row (`where`) and `hint`."""
    if not isinstance(row, dict):
        raise TrainingError(
            f"{where}: expected an object with fields, got {type(row).__name__}. Fix: {hint}."
        )
    if name not in row or row[name] is None:
        present = sorted(k for k, v in row.items() if v is not None)
        raise TrainingError(
            f"{where}: missing field {name!r} (fields present: {present}). Fix: {hint}."
        )
    v = row[name]
    if not isinstance(v, str):
        raise TrainingError(
            f"{where}: field {name!r} is {type(v).__name__}, not text. Fix: store it as a string."
        )
    return v


def detect_format(row: Any, cfg: Any, where: str) -> str:
    """'instruction' or 'text' for a TaskDataConfig `cfg` with format 'auto', from one row."""
    if cfg.format != "auto":
        return cfg.format
    keys = set(row) if isinstance(row, dict) else set()
    if {cfg.prompt_field, cfg.response_field} <= keys:
        return "instruction"
    if cfg.text_field in keys:
        return "text"
    raise TrainingError(
        f"{where}: cannot tell the format: no ({cfg.prompt_field!r}, {cfg.response_field!r}) "
        f"pair and no {cfg.text_field!r} field (fields: {sorted(keys)}). Fix: name the columns "
        "prompt and response (instruction data) or text (plain text) — `ftctl` reads those names; "
        "from Python, set TaskDataConfig.prompt_field/response_field/text_field."
    )


HUB_PROBE_SECONDS = 2.0  # the whole reachability probe, DNS included


def _hub_offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _hub_address() -> tuple[str, int]:
    """(host, port) a hub request connects to first: the HTTPS proxy if set, else HF_ENDPOINT."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    default = 443 if url.scheme in ("https", "") else 80
    return url.hostname or "huggingface.co", url.port or default


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether one TCP connection to the hub succeeds within `timeout` seconds.

    `socket.create_connection`'s timeout does not bound the DNS lookup (getaddrinfo can block
    for tens of seconds with no resolver), so the connection runs in a daemon thread and we
    wait for it at most `timeout`; a lookup still hanging is abandoned, not waited for.
    """
    host, port = _hub_address()
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except Exception:  # OSError, or anything a patched/odd socket layer raises: unreachable
            ok.append(False)

    t = threading.Thread(target=probe, name="ftctl-hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "owner/name"


def _looks_like_path(source: str) -> bool:
    """A local path the user mistyped, rather than a hub name ("name" or "owner/name")."""
    if source.startswith((".", "/", "~")) or not HUB_ID.fullmatch(source):
        return True  # ./x, ../x, /x, ~/x, C:\x, names with spaces: hub ids have none of these
    p = Path(source)
    if p.suffix.lower() in FILE_KINDS:
        return True
    return "/" in source and p.parent.is_dir()  # data/tsak, with ./data here


def _read_hub(source: str) -> Rows:
    if _hub_offline():
        raise TrainingError(
            f"{source!r} is not a local file or directory, and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set). Fix: pass a JSONL/JSON/CSV/parquet "
            "file or a save_to_disk directory, or unset HF_HUB_OFFLINE on a machine with network."
        )
    if os.environ.get("FTCTL_HUB_CHECK", "1").strip() != "0" and not hub_reachable():
        host, port = _hub_address()
        raise TrainingError(
            f"{source!r} is not a local file or directory, and the Hugging Face hub "
            f"({host}:{port}) cannot be reached from here. Fix: pass a local JSONL/JSON/CSV/"
            "parquet file or save_to_disk directory (download it where there is network), or "
            "set up network access (HTTPS_PROXY; FTCTL_HUB_CHECK=0 skips this check)."
        )
    from datasets import load_dataset

    try:
        return _read_hf(load_dataset(source), source)
    except Exception as e:  # network errors, unknown dataset names
        raise TrainingError(
            f"{source!r}: cannot load from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Fix: check the name and the network, or download it and pass the local path."
        ) from None


def read_rows(source: str | os.PathLike[str]) -> Rows:
    """All rows of a source as {split name ('' = unsplit): [(row label, row)]}."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            from datasets import load_from_disk

            return _read_hf(load_from_disk(str(path)), str(path))
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_KINDS)
        if not files:
            raise TrainingError(
                f"{path}: directory holds no data files. Fix: put train.jsonl / test.jsonl (or "
                ".json, .csv, .parquet) there, or pass a datasets.save_to_disk directory."
            )
        out: Rows = {}
        for p in files:  # one split per file stem: train.jsonl, test.jsonl, ...
            for rows in _read_file(p).values():
                out.setdefault(p.stem, []).extend(rows)
        return out
    if isinstance(source, os.PathLike) or _looks_like_path(str(source)):
        raise TrainingError(
            f"{source}: no such file or directory. Fix: check the path (a hub dataset name is "
            "'name' or 'owner/name')."
        )
    return _read_hub(str(source))
