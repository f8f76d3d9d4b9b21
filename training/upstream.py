"""The upstream set: the examples whose forgetting is measured (the columns of Z).

Usage::

    from training.upstream import UpstreamSet
    ups = UpstreamSet.from_texts(paragraphs, source="kjv") + UpstreamSet.from_texts(docs, "pydoc")
    ups.save("upstream.jsonl.gz")          # one JSON object per line, gzip by suffix
    ups = UpstreamSet.load("upstream.jsonl.gz")
    ups.digest                             # rows of Z are comparable only within one digest
    ups.by_id(["3fa1…", "9b2c…"])          # -> [Example, Example]

Each example's id is the hash of its content (`training.data.content_id`), so ids survive
reordering, subsetting and re-loading; the digest hashes the sorted ids, so it identifies the set
regardless of order. Which examples are held out from replay is decided by
`forgetting.replay.heldout_mask` (seeded by id hash) — the service passes those ids to
`finetune(replay=ReplaySpec(exclude_ids=...))`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_path
from training.data import Example, content_id, digest_of
from training.errors import TrainingError


class UpstreamSet:
    """An ordered set of examples with unique content-hash ids and a digest."""

    def __init__(self, examples: Iterable[Example]):
        self.examples: list[Example] = list(examples)
        self._index: dict[str, int] = {}
        for i, e in enumerate(self.examples):
            j = self._index.setdefault(e.id, i)
            if j != i:
                raise TrainingError(
                    f"upstream set: duplicate id {e.id} at positions {j} and {i} (same content). "
                    "Fix: deduplicate first (UpstreamSet.from_texts / from_examples do it)."
                )
        self.digest: str = digest_of(self._index)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_examples(cls, examples: Iterable[Example]) -> UpstreamSet:
        """Keep the first example of each id (duplicates dropped)."""
        seen: dict[str, Example] = {}
        for e in examples:
            seen.setdefault(e.id, e)
        return cls(seen.values())

    @classmethod
    def from_texts(cls, texts: Iterable[str], source: str = "") -> UpstreamSet:
        """Plain-text examples from strings (empty strings and duplicates dropped)."""
        return cls.from_examples(Example.text(t, source) for t in texts if t.strip())

    def __add__(self, other: UpstreamSet) -> UpstreamSet:
        return UpstreamSet.from_examples([*self.examples, *other.examples])

    # -- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._index

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def sources(self) -> list[str]:
        return [e.source for e in self.examples]

    def index_of(self, ids: Sequence[str]) -> list[int]:
        """Positions of `ids` in this set (TrainingError for an unknown id)."""
        try:
            return [self._index[i] for i in ids]
        except KeyError as e:
            raise TrainingError(
                f"upstream set {self.digest}: unknown example id {e.args[0]!r}. Fix: use ids of "
                "this set (rows are comparable only within one upstream digest)."
            ) from None

    def by_id(self, ids: Sequence[str]) -> list[Example]:
        """The examples with these ids, in the given order."""
        return [self.examples[i] for i in self.index_of(ids)]

    def as_pool(self) -> dict[str, Example]:
        """{id: example}, the form `ReplaySpec.pool` takes."""
        return {e.id: e for e in self.examples}

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSONL (gzip when the name ends in .gz), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with atomic_path(path) as tmp, opener(tmp, "wt", encoding="utf-8") as f:
            for e in self.examples:
                rec: dict[str, str] = {"id": e.id, "source": e.source}
                if e.is_text:
                    rec["text"] = e.response
                else:
                    rec.update(prompt=e.prompt, response=e.response)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> UpstreamSet:
        """Read JSONL(.gz) records {id?, source?, text} or {id?, source?, prompt, response}.

        A missing id is computed; a stored id must equal the content hash (else the file was
        edited or corrupted, and rows measured against it would silently misalign).
        """
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"{path}: no such upstream file. Fix: check the path.")
        opener: Any = gzip.open if path.suffix == ".gz" else open
        out = []
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        out.append(_record(json.loads(line), f"{path}: line {n}"))
        except UnicodeDecodeError:
            raise TrainingError(
                f"{path}: not valid UTF-8. Fix: re-encode the file as UTF-8."
            ) from None
        except json.JSONDecodeError as e:
            raise TrainingError(
                f"{path}: line {n}: invalid JSON ({e.msg}). Fix: one object per line."
            ) from None
        except (OSError, EOFError) as e:
            raise TrainingError(f"{path}: cannot read ({e}). Fix: re-create the file.") from None
        if not out:
            raise TrainingError(f"{path}: the upstream set is empty. Fix: write examples to it.")
        return cls(out)


def _record(rec: Any, where: str) -> Example:
    if not isinstance(rec, dict):
        raise TrainingError(f"{where}: expected a JSON object. Fix: one object per line.")
    source = str(rec.get("source") or "")
    if isinstance(rec.get("text"), str):
        prompt, response = "", rec["text"]
    elif isinstance(rec.get("prompt"), str) and isinstance(rec.get("response"), str):
        prompt, response = rec["prompt"], rec["response"]
    else:
        raise TrainingError(
            f"{where}: needs 'text', or 'prompt' and 'response' (fields: {sorted(rec)}). "
            "Fix: rename the fields."
        )
    if not response.strip():
        raise TrainingError(f"{where}: empty text/response. Fix: remove the line.")
    cid = content_id(prompt, response)
    if rec.get("id") not in (None, cid):
        raise TrainingError(
            f"{where}: stored id {rec['id']!r} != content hash {cid!r}: the text was edited. "
            "Fix: drop the 'id' field to recompute it (and re-measure rows: the digest changes)."
        )
    return Example(cid, prompt, response, source)


# -- a user's upstream set: files in the user's own format ------------------------------------------

MIN_UPSTREAM_EXAMPLES = 100  # fewer columns than this make a matrix nothing can be learnt from


@dataclass(frozen=True)
class UpstreamRead:
    """A user's upstream set as read from their files, with what reading it changed."""

    upstream: UpstreamSet
    duplicates_dropped: int  # rows whose content (or id) appeared before
    sources: dict[str, int]  # examples per source


def read_upstream(source: str | os.PathLike[str], *,
                  min_examples: int = MIN_UPSTREAM_EXAMPLES) -> UpstreamRead:
    """A user's upstream set: JSONL / JSON / CSV / parquet file(s), a directory of them, or a
    `datasets` save_to_disk directory. Each record has `text` (plain text: trained and measured on
    every token) or `prompt`/`response` (instruction data: the response only); optional `id`
    (else the content hash) and `source` (else the file's stem). One schema per file; empty
    records, non-UTF-8 bytes and unreadable rows are refused naming the row; duplicates are
    dropped and counted; fewer than `min_examples` examples are refused.
    """
    from training.data import TaskDataConfig, rows_to_examples
    from training.readers import read_rows

    path = Path(source).expanduser()
    splits = read_rows(path)
    examples: list[Example] = []
    for split, rows in splits.items():
        default_source = split or path.stem.removesuffix(".jsonl")
        made = rows_to_examples(rows, TaskDataConfig(), default_source)
        for (where, row), ex in zip(rows, made, strict=True):
            user_id = row.get("id") if isinstance(row, dict) else None
            user_source = row.get("source") if isinstance(row, dict) else None
            if user_id is not None and (not isinstance(user_id, str | int) or not str(user_id).strip()):
                raise TrainingError(f"{where}: 'id' must be a non-empty string. Fix: fix or drop it.")
            examples.append(dataclasses.replace(
                ex, id=str(user_id) if user_id is not None else ex.id,
                source=str(user_source) if user_source else ex.source))
    seen: dict[str, Example] = {}
    content: set[tuple[str, str]] = set()
    for e in examples:
        key = (e.prompt, e.response)
        if e.id in seen or key in content:
            continue
        seen[e.id] = e
        content.add(key)
    kept = list(seen.values())
    if len(kept) < min_examples:
        raise TrainingError(
            f"{path}: {len(kept)} distinct upstream examples ({len(examples) - len(kept)} "
            f"duplicates dropped); ftctl needs at least {min_examples} to measure and predict "
            "forgetting on. Fix: add a larger sample of what the model learned before.")
    counts: dict[str, int] = {}
    for e in kept:
        counts[e.source] = counts.get(e.source, 0) + 1
    return UpstreamRead(UpstreamSet(kept), len(examples) - len(kept), counts)


def over_long(examples: Sequence[Example], tokenizer: Any, max_length: int, *,
              chat_template: bool = True) -> list[str]:
    """Ids of the examples whose encoding (as trained and measured: chat template, EOS) is
    longer than `max_length` tokens, i.e. that training and measurement would left-truncate."""
    from training.data import encode

    return [e.id for e in examples
            if len(encode(tokenizer, e, max_length=2**62, chat_template=chat_template)[0]) > max_length]
