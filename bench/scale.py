"""Benchmark: a user-sized forgetting matrix, M tasks x N upstream examples, from MLflow rows.

Usage::

    python -m bench.scale --json                       # M = 200 tasks x N = 1,000,000 examples
    python -m bench.scale --tasks 8 --examples 20000   # a quick run (what the test does)

What a line with a real upstream sample (10^4-10^6 examples) costs outside the GPU jobs, measured
with the service's own code on a real MLflow store (SQLite + local artifacts, in a temporary
workspace):

* `log`: M statistics rows written as MLflow runs with their parquet row artifact, as the stats
  jobs log them (set-up, timed for information);
* `choose`: which rows make the matrix, from run metadata alone (`choose_rows`);
* `assemble`: the rows read one at a time into one float32 (M, N) block (`load_rows`), cold (from
  the artifact store) and warm (from the workspace's row cache);
* `fit`: the MF completion fitted on it (what the scheduled refit computes ahead of a release);
* `release`: what a release does per task on that fit: the held-out mask over N ids, the fold-in
  of k = 30 probes, and a softmax replay draw of a 1/32 budget.

Every phase runs in its own process, so its peak RSS (VmHWM) is its own; the floor is the
peak of a process that imports the same libraries, opens the store and builds the N ids, and `matrix_mib` the size of the float32
block: `assemble.peak_mib - floor_mib` against `matrix_mib` says how many copies of the matrix
the assembly holds (the goal: one, plus one row in flight). `goals` holds the issue's targets as
computed booleans: the fold-in and the replay draw each under a second, the assembly within 1.5
matrices above the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIGEST = "bench-scale"
FOLD_IN_GOAL_S = 1.0
SAMPLE_GOAL_S = 1.0
ASSEMBLY_COPIES_GOAL = 1.5


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Columns:
    """The upstream set's columns as the matrix needs them: N content-hash-like ids."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        raw = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
        self.ids: list[str] = np.char.mod("%016x", raw).tolist()
        self.digest = DIGEST
        self.n = n


def settings(workspace: Path) -> Any:
    from service.settings import Settings

    return Settings(workspace=workspace, model_line="bench-scale")


def phase_log(ws: Path, m: int, n: int) -> dict[str, Any]:
    import pandas as pd

    from service.tracking.store import ROW_ARTIFACT, TAG, Tracker

    cols = Columns(n)
    tracker = Tracker(settings(ws))
    ids = pd.Series(cols.ids, dtype=object)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for i in range(m):
        tags = {TAG + "kind": "stats", TAG + "role": "job", TAG + "row": "full",
                TAG + "digest": DIGEST, TAG + "task": f"task{i:03d}", TAG + "base_version": "1"}
        with tracker.run(f"stats:task{i:03d}", tags=tags) as run:
            delta = (rng.standard_normal(n) * 0.1).astype(np.float32)
            run.log_dataframe(pd.DataFrame({"example_id": ids, "delta": delta}), ROW_ARTIFACT)
    return {"seconds": time.perf_counter() - t0}


def phase_floor(ws: Path, m: int, n: int) -> dict[str, Any]:
    """What every phase holds besides the matrix: the libraries and a Tracker, and the N ids."""
    from service.tracking.matrix import choose_rows
    from service.tracking.store import Tracker

    choose_rows(Tracker(settings(ws)), Columns(n), base_version=1)
    return {}


def phase_assemble(ws: Path, m: int, n: int) -> dict[str, Any]:
    from service.tracking.matrix import choose_rows, load_rows
    from service.tracking.store import Tracker

    cols = Columns(n)
    tracker = Tracker(settings(ws))
    t0 = time.perf_counter()
    choice = choose_rows(tracker, cols, base_version=1)
    t1 = time.perf_counter()
    matrix = load_rows(tracker, cols, choice).matrix
    t2 = time.perf_counter()
    assert matrix.values.shape == (m, n) and matrix.values.dtype == np.float32
    return {"choose_seconds": t1 - t0, "seconds": t2 - t1, "shape": list(matrix.values.shape)}


def phase_fit(ws: Path, m: int, n: int) -> dict[str, Any]:
    import pickle

    from forgetting.completion import make_completer
    from service.tracking.matrix import assemble
    from service.tracking.store import Tracker

    cols = Columns(n)
    values = assemble(Tracker(settings(ws)), cols, base_version=1).matrix.values
    assembled = peak_mib()
    comp = make_completer("mf")
    t0 = time.perf_counter()
    comp.fit(values)
    seconds = time.perf_counter() - t0
    with (ws / "mf.pkl").open("wb") as f:
        pickle.dump(comp, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"seconds": seconds, "peak_before_fit_mib": assembled}


def phase_release(ws: Path, m: int, n: int) -> dict[str, Any]:
    import pickle

    from forgetting.probes import choose_probes
    from forgetting.replay import default_heldout_size, heldout_mask, replay_budget, sample_replay

    cols = Columns(n)
    with (ws / "mf.pkl").open("rb") as f:
        comp = pickle.load(f)
    t0 = time.perf_counter()
    held = heldout_mask(cols.ids, default_heldout_size(n), seed=0)
    t1 = time.perf_counter()
    probes = choose_probes(n, 30, seed=0, exclude=held)
    delta = np.random.default_rng(2).standard_normal(30) * 0.1
    t2 = time.perf_counter()
    pred = comp.fold_in(probes, delta)
    t3 = time.perf_counter()
    budget = replay_budget(20_000, 1 / 32)  # a task of 20,000 examples: 626 upstream examples
    plan = sample_replay(np.asarray(pred), budget, temperature=0.1, exclude=held, seed=0)
    t4 = time.perf_counter()
    assert len(plan.indices) == budget and not held[plan.indices].any()
    return {"heldout_seconds": t1 - t0, "fold_in_seconds": t3 - t2, "sample_seconds": t4 - t3,
            "budget": budget, "heldout": int(held.sum())}


PHASES = {"log": phase_log, "floor": phase_floor, "assemble": phase_assemble, "fit": phase_fit,
          "release": phase_release}


def run_phase(name: str, ws: Path, m: int, n: int) -> dict[str, Any]:
    """One phase in a fresh interpreter: its figures and its own peak RSS."""
    out = subprocess.run([sys.executable, "-m", "bench.scale", "--phase", name, "--workspace",
                          str(ws), "--tasks", str(m), "--examples", str(n)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=200, help="M: statistics rows")
    p.add_argument("--examples", type=int, default=1_000_000, help="N: upstream examples")
    p.add_argument("--json", action="store_true")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))
    if a.phase:
        result = PHASES[a.phase](a.workspace, a.tasks, a.examples)
        print(json.dumps({**result, "peak_mib": peak_mib()}))
        return 0
    m, n = a.tasks, a.examples
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        ws = Path(tmp)
        r: dict[str, Any] = {"tasks": m, "examples": n, "matrix_mib": m * n * 4 / 2**20,
                             "machine": f"{os.cpu_count()} cores"}
        for name in ("log", "floor", "assemble"):
            r[name] = run_phase(name, ws, m, n)
        r["assemble_warm"] = run_phase("assemble", ws, m, n)  # rows now in the row cache
        r["fit"] = run_phase("fit", ws, m, n)
        r["release"] = run_phase("release", ws, m, n)
    floor = r["floor"]["peak_mib"]
    copies = (r["assemble_warm"]["peak_mib"] - floor) / r["matrix_mib"]
    r["assembly_matrix_copies"] = copies
    r["fit_peak_matrix_copies"] = (r["fit"]["peak_mib"] - floor) / r["matrix_mib"]
    r["goals"] = {
        "fold_in_under_1s": r["release"]["fold_in_seconds"] < FOLD_IN_GOAL_S,
        "sample_under_1s": r["release"]["sample_seconds"] < SAMPLE_GOAL_S,
        "assembly_within_1.5_matrices": copies <= ASSEMBLY_COPIES_GOAL,
    }
    r["goals"]["all_met"] = all(r["goals"].values())
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"M = {m} x N = {n:,} ({r['matrix_mib']:.0f} MiB float32)")
        print(f"log {r['log']['seconds']:.0f} s; choose {r['assemble']['choose_seconds']:.2f} s; "
              f"assemble cold {r['assemble']['seconds']:.1f} s, warm "
              f"{r['assemble_warm']['seconds']:.1f} s, peak {copies:.2f} matrices above the floor")
        print(f"MF fit {r['fit']['seconds']:.1f} s, peak {r['fit_peak_matrix_copies']:.2f} matrices")
        rel = r["release"]
        print(f"release: held-out mask {rel['heldout_seconds']:.2f} s, fold-in "
              f"{rel['fold_in_seconds']:.3f} s, replay draw {rel['sample_seconds']:.3f} s")
        print("goals:", r["goals"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
