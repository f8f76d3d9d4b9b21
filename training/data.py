"""Task data: examples, loading and validation, tokenisation with loss masks.

Usage::

    from training.data import TaskDataConfig, load_task, encode   # files: training.readers
    task = load_task("data/sst.jsonl", TaskDataConfig(format="instruction", test_fraction=0.1))
    task.train[0]            # Example(id='3fa1…', prompt='Review: …', response='positive', source='sst')
    ids, labels = encode(tokenizer, task.train[0], max_length=512)

An `Example` is instruction data (`prompt`, `response`: the loss is on the response tokens and
the EOS, the prompt is masked with -100) or plain text (`prompt == ""`, `response` = the text:
the loss is on every text token but the first, and on the EOS). Its id is a hash of its
content, so the same example has the same id whatever file, order or subset it comes from.

First-token rule for plain text (the reference study: all tokens but the first *text* token).
Without a BOS (GPT-2, OLMo, the embedded world's tokenizer) the first token has no context and
nothing predicts it, so it is masked. With a tokenizer that prepends BOS (LLaMA, Mistral) the
BOS and the first text token are both masked: predicting the opening word from BOS alone is a
unigram guess, not a property of the example, and masking it gives the same target tokens,
hence comparable NLLs, whichever tokenizer family measured the set.

Sources: a JSONL / JSON / CSV / parquet file, a directory of such files named by split
(`train.jsonl`, `test.jsonl`), a `datasets.save_to_disk` directory, or a hub name (tried only
when the hub is reachable, else a fast error: see `training.readers`). Bad rows (missing or
non-string fields, empty text, an empty prompt in instruction data, bad UTF-8) raise
`TrainingError` naming the file, the row and the fix. An instruction row with an empty prompt is
refused rather than read as plain text: that would silently change which tokens carry loss
(format="text" says so explicitly).

Length rule (the reference study's `truncate_prefix`): a sequence longer than `max_length` keeps
its LAST `max_length` tokens, so the response (and the EOS) survive and the prompt loses its start.
`truncation="error"` refuses such rows instead, naming the file and row (`Example.origin`) when
the example was read by `load_task`: at load with `load_task(..., tokenizer=tok)`, else when
the example is first encoded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.errors import TrainingError
from training.readers import detect_format, read_rows, row_field

IGNORE = -100  # label of tokens that carry no loss (torch's cross_entropy ignore_index)


def content_id(prompt: str, response: str) -> str:
    """Stable id of an example: the first 16 hex digits of sha256(prompt \\x1f response)."""
    return hashlib.sha256(f"{prompt}\x1f{response}".encode()).hexdigest()[:16]


def digest_of(ids: Iterable[str]) -> str:
    """Order-independent digest of a set of example ids (sha256 over the sorted ids)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def task_digest(train: Iterable[Example], test: Iterable[Example]) -> str:
    """A task's digest: its train and test id sets, each order-independent. The one rule for
    tasks from files (`load_task`) and embedded ones (`TaskInfo.digest`); moving an example
    between train and test changes it."""
    return digest_of([f"train:{e.id}" for e in train] + [f"test:{e.id}" for e in test])


@dataclass(frozen=True)
class Example:
    """One example. Plain text: `prompt == ""` and `response` is the text.

    `origin` ("file: line n") is where it was read, for error messages only: it is not part of
    the id, equality or hash, so the same content from two files is the same example.
    """

    id: str
    prompt: str
    response: str
    source: str = ""
    origin: str = field(default="", compare=False, repr=False)

    @classmethod
    def make(cls, prompt: str, response: str, source: str = "", origin: str = "") -> Example:
        """An example whose id is its content hash."""
        return cls(content_id(prompt, response), prompt, response, source, origin)

    @classmethod
    def text(cls, text: str, source: str = "", origin: str = "") -> Example:
        """A plain-text example."""
        return cls.make("", text, source, origin)

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

    def encoder(self, tokenizer: Any, max_length: int | None = None) -> Any:
        """Example -> (ids, labels) with these settings (max_length: the smaller of the two)."""
        limit = min(max_length or self.max_length, self.max_length)

        def enc(e: Example) -> tuple[list[int], list[int]]:
            return encode(
                tokenizer,
                e,
                max_length=limit,
                truncation=self.truncation,
                chat_template=self.chat_template,
                add_eos=self.add_eos,
            )

        return enc

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
    """A loaded task: train and test examples; `digest` identifies the pair of id sets.

    `origins` maps an example id to where it was first read ("file: line n"), so that problems
    found later (e.g. by `check_lengths`, which needs the tokenizer) still name the row.
    """

    name: str
    train: list[Example]
    test: list[Example] = field(default_factory=list)
    digest: str = ""
    config: TaskDataConfig = field(default_factory=lambda: TaskDataConfig())
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def check_lengths(self, tokenizer: Any, max_length: int | None = None) -> int:
        """Count the examples longer than the context (they will be left-truncated).

        With `config.truncation == "error"` the first such example raises `TrainingError`
        naming its file and row instead.
        """
        limit = min(max_length or self.config.max_length, self.config.max_length)
        n = 0
        for e in [*self.train, *self.test]:
            ids, _ = encode(
                tokenizer,
                e,
                max_length=10**9,
                chat_template=self.config.chat_template,
                add_eos=self.config.add_eos,
            )
            if len(ids) > limit:
                if self.config.truncation == "error":
                    raise _too_long(e, len(ids), limit, self.origins.get(e.id, ""))
                n += 1
        return n


# --------------------------------------------------------------------------------------------
# Rows → examples
# --------------------------------------------------------------------------------------------


def rows_to_examples(
    rows: Sequence[tuple[str, Any]],
    cfg: TaskDataConfig,
    source: str,
    origins: dict[str, str] | None = None,
) -> list[Example]:
    """Validate rows and make examples (format decided on the first row when 'auto').

    `origins`, when given, receives {example id: row label} for the first row of each id.
    """
    if not rows:
        return []
    fmt = detect_format(rows[0][1], cfg, rows[0][0])
    out = []
    for where, row in rows[: cfg.max_rows]:
        if fmt == "instruction":
            hint = ("name the columns prompt/response (from Python: TaskDataConfig.prompt_field/"
                    "response_field), or fix the row")
            prompt = row_field(row, cfg.prompt_field, where, hint)
            response = row_field(row, cfg.response_field, where, hint)
            if not prompt.strip():
                raise TrainingError(
                    f"{where}: empty {cfg.prompt_field!r} in instruction data (it would be read as "
                    "plain text, with loss on every token). Fix: fill in the prompt, remove the "
                    "row, or load prompt-less data with format='text' and text_field."
                )
            if not response.strip():
                raise TrainingError(
                    f"{where}: empty {cfg.response_field!r}: nothing to learn or measure. "
                    "Fix: remove the row or fill in the response."
                )
            out.append(Example.make(prompt, response, source, where))
        else:
            text = row_field(row, cfg.text_field, where, "set text_field to the column name")
            if not text.strip():
                raise TrainingError(f"{where}: empty {cfg.text_field!r}. Fix: remove the row.")
            out.append(Example.text(text, source, where))
        if origins is not None:
            origins.setdefault(out[-1].id, where)
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
    source: str | os.PathLike[str],
    config: TaskDataConfig = TaskDataConfig(),
    *,
    tokenizer: Any = None,
) -> TaskData:
    """Load, validate and split a task dataset.

    Parameters
    ----------
    source : a data file, a directory of split files, a save_to_disk directory, or a hub name.
    config : field names, format, and the split rule when the data has no `test_split`.
    tokenizer : when given, rows are also length-checked here (`TaskData.check_lengths`), so
        with `truncation="error"` an over-long row fails at load, naming its file and row.

    Returns
    -------
    TaskData(name, train, test, digest); `Example.source` is the task name.
    """
    splits = read_rows(source)
    name = Path(str(source)).stem if Path(str(source)).exists() else str(source)
    origins: dict[str, str] = {}
    if not any(splits.values()):
        raise TrainingError(f"{source}: the dataset is empty. Fix: point at a file with rows.")
    if config.test_split in splits:
        test = rows_to_examples(splits[config.test_split], config, name, origins)
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
        train = rows_to_examples(splits[train_key], config, name, origins)
    else:
        key = config.train_split if config.train_split in splits else next(iter(splits))
        if len(splits) > 1 and config.train_split not in splits:
            raise TrainingError(
                f"{source}: splits {sorted(splits)} have no {config.train_split!r}. "
                "Fix: set TaskDataConfig.train_split / test_split to their names."
            )
        train, test = split_by_hash(
            rows_to_examples(splits[key], config, name, origins), config.test_fraction, config.seed
        )
    if not train:
        raise TrainingError(f"{source}: the train split is empty. Fix: add training rows.")
    task = TaskData(name, train, test, task_digest(train, test), config, origins)
    if tokenizer is not None:
        task.check_lengths(tokenizer)
    return task


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


def _special_prefix(tokenizer: Any, ids: Sequence[int]) -> int:
    """How many special tokens the tokenizer put before the text in `ids` (BOS: 1, none: 0).

    Asked of the tokenizer itself (a one-character probe with and without special tokens), not
    read from `bos_token_id`: many tokenizers define a BOS they never prepend (GPT-2, the
    embedded world). The probe runs only when `ids` starts with a special id.
    """
    if not ids or ids[0] not in set(getattr(tokenizer, "all_special_ids", ()) or ()):
        return 0
    with_sp, plain = _ids(tokenizer, "a", True), _ids(tokenizer, "a", False)
    for k in range(len(with_sp) - len(plain) + 1):
        if with_sp[k : k + len(plain)] == plain:
            return k
    return 0


def _too_long(example: Example, n: int, limit: int, origin: str = "") -> TrainingError:
    where = origin or example.origin or f"example {example.id} ({example.source or 'no source'})"
    return TrainingError(
        f"{where}: {n} tokens > max_length {limit}. Fix: raise max_length, shorten or drop the "
        "row, or use truncation='left' (keeps the last max_length tokens, as in the reference "
        "study)."
    )


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
    Plain text: all tokens are targets except the first text token (and a BOS before it: see
    the module docstring). Longer than `max_length`: keep the last `max_length` tokens ("left"),
    or raise ("error", naming `example.origin`). The first kept token is never a target.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    tail = [int(eos)] if add_eos and eos is not None else []
    if example.is_text:
        ids = _ids(tokenizer, example.response, True)
        if tail and ids and ids[-1] == tail[0]:  # the tokenizer appends EOS itself (e.g. T5)
            tail = []
        ids = ids + tail
        labels = list(ids)
        for i in range(min(len(labels), _special_prefix(tokenizer, ids) + 1)):
            labels[i] = IGNORE  # BOS (if any) and the first text token: nothing predicts them
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
            raise _too_long(example, len(ids), max_length)
        ids, labels = ids[-max_length:], labels[-max_length:]
    if labels:
        labels[0] = IGNORE  # nothing predicts the first token of the window
    return ids, labels


def pad_batch(items: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Right-pad (ids, labels) pairs: (input_ids, attention_mask, labels) long tensors."""
    import torch

    width = max(len(x) for x, _ in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    att = torch.zeros((len(items), width), dtype=torch.long)
    lab = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for r, (x, y) in enumerate(items):
        ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        lab[r, : len(y)] = torch.tensor(y, dtype=torch.long)
        att[r, : len(x)] = 1
    return ids, att, lab
