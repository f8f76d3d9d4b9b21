"""Task data: examples, loading and validation, tokenisation with loss masks.

Usage::

    from training.data import TaskDataConfig, load_task, encode
    task = load_task("data/sst.jsonl", TaskDataConfig(format="instruction", test_fraction=0.1))
    task.train[0]            # Example(id='3fa1…', prompt='Review: …', response='positive', source='sst')
    ids, labels = encode(tokenizer, task.train[0], max_length=512)

An `Example` is instruction data (`prompt`, `response`: the loss is on the response tokens and
the EOS, the prompt is masked with -100) or plain text (`prompt == ""`, `response` = the text:
the loss is on every token but the first, which nothing predicts). Its id is a hash of its
content, so the same example has the same id whatever file, order or subset it comes from.

Sources: a JSONL / JSON / CSV / parquet file, a directory of such files named by split
(`train.jsonl`, `test.jsonl`), a `datasets.save_to_disk` directory, or a hub name (only when the
hub is reachable: with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set we fail at once instead of
retrying DNS for ~45 s). Bad rows (missing or non-string fields, empty text, bad UTF-8) raise
`TrainingError` naming the file, the row and the fix.

Length rule (the reference study's `truncate_prefix`): a sequence longer than `max_length` keeps
its LAST `max_length` tokens, so the response (and the EOS) survive and the prompt loses its start.
`truncation="error"` refuses such rows instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.errors import TrainingError

IGNORE = -100  # label of tokens that carry no loss (torch's cross_entropy ignore_index)
FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def content_id(prompt: str, response: str) -> str:
    """Stable id of an example: the first 16 hex digits of sha256(prompt \\x1f response)."""
    return hashlib.sha256(f"{prompt}\x1f{response}".encode()).hexdigest()[:16]


def digest_of(ids: Iterable[str]) -> str:
    """Order-independent digest of a set of example ids (sha256 over the sorted ids)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    """One example. Plain text: `prompt == ""` and `response` is the text."""

    id: str
    prompt: str
    response: str
    source: str = ""

    @classmethod
    def make(cls, prompt: str, response: str, source: str = "") -> Example:
        """An example whose id is its content hash."""
        return cls(content_id(prompt, response), prompt, response, source)

    @classmethod
    def text(cls, text: str, source: str = "") -> Example:
        """A plain-text example."""
        return cls.make("", text, source)

    @property
    def is_text(self) -> bool:
        return self.prompt == ""


@dataclass(frozen=True)
class TaskDataConfig:
    """How to read a task dataset and turn it into token sequences."""

    format: Literal["auto", "instruction", "text"] = "auto"
    prompt_field: str = "prompt"
    response_field: str = "response"
    text_field: str = "text"
    train_split: str = "train"
    test_split: str = "test"
    # Used only when the source has no `test_split`: a seeded, order-independent hash split.
    test_fraction: float = 0.1
    seed: int = 0
    max_length: int = 1024
    truncation: Literal["left", "error"] = "left"
    chat_template: bool = True  # applied to instruction data when the tokenizer has one
    add_eos: bool = True  # append EOS to the response / text (it is a target token)
    max_rows: int | None = None  # read at most this many rows per split (quick experiments)

    def __post_init__(self) -> None:
        if self.format not in ("auto", "instruction", "text"):
            raise TrainingError(
                f"TaskDataConfig.format = {self.format!r}. Fix: use 'auto', 'instruction' or 'text'."
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise TrainingError(
                f"TaskDataConfig.test_fraction = {self.test_fraction} must be in [0, 1). "
                "Fix: use e.g. 0.1, or 0 for no test split."
            )
        if self.truncation not in ("left", "error"):
            raise TrainingError(
                f"TaskDataConfig.truncation = {self.truncation!r}. Fix: use 'left' or 'error'."
            )
        if self.max_length < 2:
            raise TrainingError(
                f"TaskDataConfig.max_length = {self.max_length} must be >= 2. Fix: use e.g. 512."
            )


@dataclass(frozen=True)
class TaskData:
    """A loaded task: train and test examples; `digest` identifies the pair of id sets."""

    name: str
    train: list[Example]
    test: list[Example] = field(default_factory=list)
    digest: str = ""


# --------------------------------------------------------------------------------------------
# Reading rows: every reader yields (row label, dict) so errors can name the row.
# --------------------------------------------------------------------------------------------


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


def _read_json(path: Path) -> dict[str, list[tuple[str, Any]]]:
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


def _read_file(path: Path) -> dict[str, list[tuple[str, Any]]]:
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


def _read_hf(ds: Any, label: str) -> dict[str, list[tuple[str, Any]]]:
    """A datasets Dataset or DatasetDict → {split: rows}."""
    from datasets import Dataset

    splits = {"": ds} if isinstance(ds, Dataset) else dict(ds)
    return {
        k: [(f"{label}: {k or 'rows'} row {i}", r) for i, r in enumerate(d)]
        for k, d in splits.items()
    }


def _hub_offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def read_rows(source: str | os.PathLike[str]) -> dict[str, list[tuple[str, Any]]]:
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
        out: dict[str, list[tuple[str, Any]]] = {}
        for p in files:  # one split per file stem: train.jsonl, test.jsonl, ...
            for rows in _read_file(p).values():
                out.setdefault(p.stem, []).extend(rows)
        return out
    looks_like_path = (
        str(source).startswith((".", "/", "~")) or Path(str(source)).suffix in FILE_KINDS
    )
    if looks_like_path or str(source).count("/") > 1:
        raise TrainingError(f"{source}: no such file or directory. Fix: check the path.")
    if _hub_offline():
        raise TrainingError(
            f"{source!r} is not a local file or directory, and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set). Fix: pass a JSONL/JSON/CSV/parquet "
            "file or a save_to_disk directory, or unset HF_HUB_OFFLINE on a machine with network."
        )
    from datasets import load_dataset

    try:
        return _read_hf(load_dataset(str(source)), str(source))
    except Exception as e:  # network errors, unknown dataset names
        raise TrainingError(
            f"{source!r}: cannot load from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Fix: check the name and the network, or download it and pass the local path."
        ) from None


# --------------------------------------------------------------------------------------------
# Rows → examples
# --------------------------------------------------------------------------------------------


def _field(row: Any, name: str, where: str, hint: str) -> str:
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


def _detect_format(row: Any, cfg: TaskDataConfig, where: str) -> str:
    if cfg.format != "auto":
        return cfg.format
    keys = set(row) if isinstance(row, dict) else set()
    if {cfg.prompt_field, cfg.response_field} <= keys:
        return "instruction"
    if cfg.text_field in keys:
        return "text"
    raise TrainingError(
        f"{where}: cannot tell the format: no ({cfg.prompt_field!r}, {cfg.response_field!r}) "
        f"pair and no {cfg.text_field!r} field (fields: {sorted(keys)}). Fix: set prompt_field/"
        "response_field or text_field to the column names (CLI: --prompt-field ...)."
    )


def rows_to_examples(
    rows: Sequence[tuple[str, Any]], cfg: TaskDataConfig, source: str
) -> list[Example]:
    """Validate rows and make examples (format decided on the first row when 'auto')."""
    if not rows:
        return []
    fmt = _detect_format(rows[0][1], cfg, rows[0][0])
    out = []
    for where, row in rows[: cfg.max_rows]:
        if fmt == "instruction":
            hint = "set prompt_field/response_field to the column names, or fix the row"
            prompt = _field(row, cfg.prompt_field, where, hint)
            response = _field(row, cfg.response_field, where, hint)
            if not response.strip():
                raise TrainingError(
                    f"{where}: empty {cfg.response_field!r}: nothing to learn or measure. "
                    "Fix: remove the row or fill in the response."
                )
            out.append(Example.make(prompt, response, source))
        else:
            text = _field(row, cfg.text_field, where, "set text_field to the column name")
            if not text.strip():
                raise TrainingError(f"{where}: empty {cfg.text_field!r}. Fix: remove the row.")
            out.append(Example.text(text, source))
    return out


def split_by_hash(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded, order-independent split: an example's side depends only on (seed, id)."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    key = {e.id: hashlib.sha256(f"{seed}:{e.id}".encode()).digest() for e in examples}
    ranked = sorted({e.id for e in examples}, key=key.__getitem__)
    n_test = min(len(ranked) - 1, max(1, round(fraction * len(ranked))))
    test_ids = set(ranked[:n_test])
    return [e for e in examples if e.id not in test_ids], [e for e in examples if e.id in test_ids]


def load_task(
    source: str | os.PathLike[str], config: TaskDataConfig = TaskDataConfig()
) -> TaskData:
    """Load, validate and split a task dataset.

    Parameters
    ----------
    source : a data file, a directory of split files, a save_to_disk directory, or a hub name.
    config : field names, format, and the split rule when the data has no `test_split`.

    Returns
    -------
    TaskData(name, train, test, digest); `Example.source` is the task name.
    """
    splits = read_rows(source)
    name = Path(str(source)).stem if Path(str(source)).exists() else str(source)
    if not any(splits.values()):
        raise TrainingError(f"{source}: the dataset is empty. Fix: point at a file with rows.")
    if config.test_split in splits:
        test = rows_to_examples(splits[config.test_split], config, name)
        rest = [k for k in splits if k != config.test_split]
        train_key = (
            config.train_split
            if config.train_split in splits
            else (rest[0] if len(rest) == 1 else None)
        )
        if train_key is None:
            raise TrainingError(
                f"{source}: splits {sorted(splits)} have no {config.train_split!r}. "
                "Fix: set TaskDataConfig.train_split to one of them."
            )
        train = rows_to_examples(splits[train_key], config, name)
    else:
        key = config.train_split if config.train_split in splits else next(iter(splits))
        if len(splits) > 1 and config.train_split not in splits:
            raise TrainingError(
                f"{source}: splits {sorted(splits)} have no {config.train_split!r}. "
                "Fix: set TaskDataConfig.train_split / test_split to their names."
            )
        train, test = split_by_hash(
            rows_to_examples(splits[key], config, name), config.test_fraction, config.seed
        )
    if not train:
        raise TrainingError(f"{source}: the train split is empty. Fix: add training rows.")
    digest = digest_of([f"train:{e.id}" for e in train] + [f"test:{e.id}" for e in test])
    return TaskData(name=name, train=train, test=test, digest=digest)


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


def pad_id(tokenizer: Any) -> int:
    """The id used for padding (pad, else EOS, else 0): padded positions are masked anyway."""
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"]) if text else []


def encode(
    tokenizer: Any,
    example: Example,
    *,
    max_length: int = 1024,
    truncation: str = "left",
    chat_template: bool = True,
    add_eos: bool = True,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example (labels = ids, or -100 where there is no loss).

    Instruction: [prompt tokens (-100)] + [response tokens + EOS (targets)]; the prompt goes
    through the tokenizer's chat template when `chat_template` and the tokenizer has one.
    Plain text: all tokens are targets except the first. Longer than `max_length`: keep the last
    `max_length` tokens ("left"), or raise ("error"). The first kept token is never a target.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    tail = [int(eos)] if add_eos and eos is not None else []
    if example.is_text:
        ids = _ids(tokenizer, example.response, True)
        if tail and ids and ids[-1] == tail[0]:  # the tokenizer appends EOS itself (e.g. T5)
            tail = []
        ids = ids + tail
        labels = list(ids)
    else:
        if chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": example.prompt}],
                tokenize=False,
                add_generation_prompt=True,
            )
            p = _ids(tokenizer, text, False)  # the template already holds the special tokens
        else:
            p = _ids(tokenizer, example.prompt, True)
            if p and eos is not None and p[-1] == eos:  # no EOS between prompt and response
                p = p[:-1]
        r = _ids(tokenizer, example.response, not p) + tail
        ids, labels = p + r, [IGNORE] * len(p) + r
    if len(ids) > max_length:
        if truncation == "error":
            raise TrainingError(
                f"example {example.id} ({example.source or 'no source'}): {len(ids)} tokens > "
                f"max_length {max_length}. Fix: raise max_length, or use truncation='left' "
                "(keeps the last max_length tokens)."
            )
        ids, labels = ids[-max_length:], labels[-max_length:]
    if labels:
        labels[0] = IGNORE  # nothing predicts the first token of the window
    return ids, labels
