"""The forgetting matrix Z: rows = fine-tuned tasks, columns = upstream examples, NaN = unobserved.

Usage::

    from forgetting.matrix import ForgettingMatrix, RowMeta
    m = ForgettingMatrix.from_rows([(RowMeta("t1", task="t1"), ids, delta_nll)], digest=upstream.digest)
    m = m.with_row(RowMeta("t2", task="t2"), probe_ids, probe_values)   # partial row, NaN elsewhere
    m.save("z.npz"); m2 = ForgettingMatrix.load("z.npz", expected_digest=upstream.digest)

Z_ij = mean per-token NLL of upstream example j after fine-tuning on task i minus before (the
reference study's definition). Values are float32: at N = 200,000 examples a float64 row costs
twice the memory for precision nobody measures. Every row of one matrix was measured against
the same upstream set, identified by its `digest`; mixing digests is refused, because columns
with the same position would then mean different examples.

File format: one uncompressed `.npz` holding `values` (float32), `example_ids` (unicode) and
`meta` (a JSON string with the row metadata, digest and format version; also the ids themselves
when one ends in NUL, which numpy's fixed-width strings would drop), loaded without pickle.
It is written through `common.atomic.atomic_path` (a temporary sibling moved into place with
`os.replace`),
so a crash leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_path
from forgetting.errors import ForgettingError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RowMeta:
    """Identity of one row: a unique `key` plus what produced it."""

    key: str
    task: str
    base_model: str = ""
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # upstream set the row was measured on ("" = the matrix's, unchecked)


def _as_row(values: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape[0] != n:
        raise ForgettingError(
            f"{what}: {arr.shape[0]} values for {n} example ids; pass one value per id."
        )
    if np.isinf(arr).any():
        raise ForgettingError(f"{what}: values contain inf; use NaN for unobserved entries.")
    return arr


def _mmap_member(path: Path, member: str) -> np.ndarray:
    """Memory-map an uncompressed .npy member of an .npz (np.load ignores mmap_mode for .npz).

    `save` writes with `np.savez` (ZIP_STORED), so the member's bytes sit contiguously in the
    file: skip the zip local header (30 bytes + name + extra) and the .npy header, then map.
    """
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            raise ForgettingError(f"{path}: {member} is compressed and cannot be memory-mapped.")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
        start += int.from_bytes(local[28:30], "little")
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


@dataclass
class ForgettingMatrix:
    """Dense float32 (M, N) matrix with row metadata, column ids and the upstream-set digest."""

    values: np.ndarray
    example_ids: list[str]
    rows: list[RowMeta]
    digest: str

    def __post_init__(self) -> None:
        self.values = np.asanyarray(self.values, dtype=np.float32)  # keeps a memmap a memmap
        self.example_ids = [str(i) for i in self.example_ids]
        self.rows = list(self.rows)
        if self.values.ndim != 2:
            raise ForgettingError(
                f"values must be 2-D (tasks x examples), got shape {self.values.shape}; reshape it."
            )
        m, n = self.values.shape
        if n != len(self.example_ids) or m != len(self.rows):
            raise ForgettingError(
                f"values are {m}x{n} but there are {len(self.rows)} rows and "
                f"{len(self.example_ids)} example ids; pass one RowMeta per row and one id per column."
            )
        if len(set(self.example_ids)) != n:
            raise ForgettingError("example ids are not unique; deduplicate the upstream set first.")
        keys = [r.key for r in self.rows]
        if len(set(keys)) != m:
            raise ForgettingError("row keys are not unique; give every row its own key.")
        # Row blocks: a memory-mapped matrix is checked without an (M, N) temporary.
        for i in range(0, m, max(1, 2**24 // max(n, 1))):
            if np.isinf(self.values[i : i + max(1, 2**24 // max(n, 1))]).any():
                raise ForgettingError("values contain inf; use NaN for unobserved entries.")
        self._index: dict[str, int] = {e: j for j, e in enumerate(self.example_ids)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[RowMeta, Sequence[str], Any]],
        digest: str,
        example_ids: Sequence[str] | None = None,
        *,
        n_rows: int | None = None,
    ) -> ForgettingMatrix:
        """Build a matrix from rows measured on possibly different column orders or subsets.

        Each row is `(meta, ids, values)`; entries are placed by example id, so the order in
        which a row was measured does not matter. Columns = `example_ids` when given (ids
        outside it are refused), else the union of all ids in order of first appearance.
        Columns a row did not measure are NaN.

        Streaming: with `example_ids` and `n_rows`, `rows` may be a generator that loads each
        row when asked; the (n_rows, N) float32 block is the only full-size array, and a row
        logged in column order is copied without any per-id lookup (M = 200 x N = 10^6 in
        bench/scale.py).
        """
        if n_rows is None or example_ids is None:
            rows = list(rows)
            n_rows = len(rows)
        if example_ids is None:
            order: dict[str, None] = {}
            for _, ids, _ in rows:
                order.update(dict.fromkeys(map(str, ids)))
            example_ids = list(order)
        columns = cls(np.zeros((0, len(example_ids)), np.float32), list(example_ids), [], digest)
        in_order = np.asarray(columns.example_ids, dtype=object)
        block = np.full((n_rows, len(example_ids)), np.nan, dtype=np.float32)
        metas: list[RowMeta] = []
        for i, (meta, ids, vals) in enumerate(rows):  # one vectorised scatter per row
            if i >= n_rows:
                raise ForgettingError(f"more rows than n_rows={n_rows}; pass the right count.")
            if meta.digest and meta.digest != digest:
                raise ForgettingError(
                    f"row {meta.key!r} was measured on upstream set {meta.digest!r}, the matrix is "
                    f"{digest!r}; rows are comparable only within one upstream set: measure them "
                    "on the same set.")
            values = _as_row(vals, len(ids), f"row {meta.key!r}")
            if len(ids) == len(in_order) and np.array_equal(np.asarray(ids, dtype=object), in_order):
                block[i] = values  # logged in column order (every ftctl row is)
            else:
                block[i, columns._row_columns(ids, meta.key)] = values
            metas.append(meta)
        if len(metas) != n_rows:
            raise ForgettingError(f"{len(metas)} rows for n_rows={n_rows}; pass the right count.")
        return cls._trusted(block, columns, metas, digest)

    @classmethod
    def _trusted(cls, values: np.ndarray, columns: ForgettingMatrix, rows: list[RowMeta],
                 digest: str) -> ForgettingMatrix:
        """A matrix on the already-checked columns of `columns` (skips re-validating N ids)."""
        keys = [r.key for r in rows]
        if len(set(keys)) != len(keys):
            raise ForgettingError("row keys are not unique; give every row its own key.")
        out = cls.__new__(cls)
        out.values, out.example_ids, out.rows, out.digest = values, columns.example_ids, rows, digest
        out._index = columns._index
        return out

    def column_index(self, ids: Sequence[str]) -> np.ndarray:
        """Column positions of `ids` (int64); unknown ids raise `ForgettingError`."""
        try:
            return np.fromiter((self._index[str(i)] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise ForgettingError(
                f"example id {exc.args[0]!r} is not a column of this matrix; measure rows on the "
                "same upstream set or pass example_ids covering every id."
            ) from None

    def _row_columns(self, ids: Sequence[str], key: str) -> np.ndarray:
        cols = self.column_index(ids)
        if np.unique(cols).size != cols.size:
            raise ForgettingError(
                f"row {key!r} lists an example id more than once; measure each example once "
                "(a repeated id would silently overwrite the other value)."
            )
        return cols

    def with_row(
        self, meta: RowMeta, ids: Sequence[str], values: Any, *, digest: str | None = None
    ) -> ForgettingMatrix:
        """A new matrix with one more (possibly partial) row; refuses a duplicate key or digest."""
        digest = digest or meta.digest or None
        if digest is not None and digest != self.digest:
            raise ForgettingError(
                f"row {meta.key!r} was measured on upstream set {digest!r}, the matrix on "
                f"{self.digest!r}; measure it on the matrix's upstream set."
            )
        if meta.key in {r.key for r in self.rows}:
            raise ForgettingError(f"row key {meta.key!r} already exists; pick a new key.")
        row = np.full((1, self.n_examples), np.nan, dtype=np.float32)
        row[0, self._row_columns(ids, meta.key)] = _as_row(values, len(ids), f"row {meta.key!r}")
        return ForgettingMatrix(
            np.vstack([self.values, row]), self.example_ids, [*self.rows, meta], self.digest
        )

    @classmethod
    def stack(cls, matrices: Sequence[ForgettingMatrix]) -> ForgettingMatrix:
        """Concatenate rows of matrices on the same upstream set, aligning columns by id."""
        if not matrices:
            raise ForgettingError("nothing to stack; pass at least one matrix.")
        digests = {m.digest for m in matrices}
        if len(digests) > 1:
            raise ForgettingError(
                f"matrices come from different upstream sets (digests {sorted(digests)}); "
                "only stack rows measured on the same upstream set."
            )
        rows = [
            (meta, m.example_ids, m.values[i]) for m in matrices for i, meta in enumerate(m.rows)
        ]
        return cls.from_rows(rows, matrices[0].digest)

    # ------------------------------------------------------------------ selection
    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    @property
    def n_examples(self) -> int:
        return self.values.shape[1]

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.rows]

    def _mask(self, sel: Any, names: list[str], what: str) -> np.ndarray:
        arr = np.asarray(sel)
        if arr.dtype == bool:
            if arr.shape != (len(names),):
                raise ForgettingError(
                    f"{what} mask has shape {arr.shape}, expected ({len(names)},); pass one "
                    "bool per entry."
                )
            return np.flatnonzero(arr)
        pos = {k: i for i, k in enumerate(names)}
        missing = [k for k in map(str, arr.reshape(-1)) if k not in pos]
        if missing:
            raise ForgettingError(f"unknown {what} {missing[:3]}; pass existing {what} or a mask.")
        return np.array([pos[str(k)] for k in arr.reshape(-1)], dtype=np.int64)

    def select_rows(self, keys_or_mask: Any) -> ForgettingMatrix:
        """Rows by key list or bool mask (in the given order)."""
        idx = self._mask(keys_or_mask, self.keys, "row keys")
        return ForgettingMatrix(
            self.values[idx], self.example_ids, [self.rows[i] for i in idx], self.digest
        )

    def select_columns(self, ids_or_mask: Any) -> ForgettingMatrix:
        """Columns by example-id list or bool mask (in the given order)."""
        arr = np.asarray(ids_or_mask)
        if arr.dtype == bool:
            if arr.shape != (self.n_examples,):
                raise ForgettingError(
                    f"column mask has shape {arr.shape}, expected ({self.n_examples},)."
                )
            idx = np.flatnonzero(arr)
        else:
            idx = self.column_index(list(arr.reshape(-1)))
        return ForgettingMatrix(
            self.values[:, idx], [self.example_ids[j] for j in idx], self.rows, self.digest
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file in the same directory + `os.replace`); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "digest": self.digest,
            "rows": [asdict(r) for r in self.rows],
        }
        if any(i.endswith("\x00") for i in self.example_ids):
            # numpy's fixed-width unicode drops trailing NULs: keep such ids losslessly in JSON
            meta["example_ids"] = self.example_ids
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(
                fh,
                values=self.values,
                example_ids=np.array(self.example_ids, dtype=str),
                meta=np.array(json.dumps(meta)),
            )
            fh.flush()
            os.fsync(fh.fileno())
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, expected_digest: str | None = None, mmap: bool = False
    ) -> ForgettingMatrix:
        """Read a matrix saved by `save`; refuses a different upstream digest when one is given.

        `mmap=True` maps the values read-only from the file instead of reading them (for
        matrices of hundreds of MB: rows are paged in as they are used).
        """
        path = Path(path)
        if not path.exists():
            raise ForgettingError(f"no forgetting matrix at {path}; build one or fix the path.")
        try:
            with np.load(path, allow_pickle=False) as data:
                values = _mmap_member(path, "values.npy") if mmap else data["values"]
                meta = json.loads(str(data["meta"]))
                ids = meta.get("example_ids") or data["example_ids"].tolist()
        except (OSError, KeyError, ValueError) as exc:
            raise ForgettingError(
                f"{path} is not a forgetting matrix file ({exc}); rebuild it with ForgettingMatrix.save."
            ) from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ForgettingError(
                f"{path} has format version {meta.get('format_version')}, this code reads "
                f"{FORMAT_VERSION}; rebuild the matrix."
            )
        if expected_digest is not None and meta["digest"] != expected_digest:
            raise ForgettingError(
                f"{path} was measured on upstream set {meta['digest']!r}, expected "
                f"{expected_digest!r}; rebuild the matrix on the current upstream set."
            )
        rows = [RowMeta(**r) for r in meta["rows"]]
        return cls(values, ids, rows, meta["digest"])
