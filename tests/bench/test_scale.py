"""`python -m bench.scale` at a test's size, and the streaming assembly it measures: rows read
one at a time into one float32 block, in column order or not, with the same values either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forgetting.errors import ForgettingError
from forgetting.matrix import ForgettingMatrix, RowMeta

ROOT = Path(__file__).resolve().parents[2]


def test_streamed_rows_land_by_id_in_any_order() -> None:
    ids = [f"e{i}" for i in range(50)]
    rng = np.random.default_rng(0)
    vals = rng.standard_normal((3, 50)).astype(np.float32)
    perm = rng.permutation(50)
    loaded = []

    def rows():
        for i in range(3):
            loaded.append(i)  # proves laziness: row i is produced only when asked
            order = np.arange(50) if i != 1 else perm  # row 1 was logged in another order
            yield RowMeta(f"r{i}", f"t{i}"), np.asarray(ids, dtype=object)[order], vals[i, order]

    m = ForgettingMatrix.from_rows(rows(), digest="d", example_ids=ids, n_rows=3)
    np.testing.assert_array_equal(m.values, vals)
    assert loaded == [0, 1, 2] and m.column_index(["e7"])[0] == 7
    partial = ForgettingMatrix.from_rows([(RowMeta("p", "p"), ["e3", "e1"], [1.0, 2.0])], "d", ids)
    assert partial.values[0, 1] == 2.0 and np.isnan(partial.values[0, 0])
    with pytest.raises(ForgettingError, match="n_rows=2"):
        ForgettingMatrix.from_rows(rows(), digest="d", example_ids=ids, n_rows=2)
    with pytest.raises(ForgettingError, match="measured on upstream set"):
        ForgettingMatrix.from_rows([(RowMeta("x", "x", digest="other"), ids, vals[0])], "d", ids)


def test_scale_bench_runs_every_phase() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.scale", "--tasks", "3", "--examples", "3000",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["assemble"]["shape"] == [3, 3000] and r["release"]["budget"] == 626
    assert r["release"]["heldout"] == 750  # a quarter of 3,000 (the default below 40,000)
    assert set(r["goals"]) == {"fold_in_under_1s", "sample_under_1s", "assembly_within_1.5_matrices",
                               "all_met"}
    assert all(r[p]["peak_mib"] > 0 for p in ("floor", "assemble", "fit", "release"))
