"""Completion benchmark: accuracy and speed of fold-in vs the paper-style refit on planted matrices.

Usage::

    python -m bench.completion --json            # M=100 x N=20,000 and M=1,000 x N=200,000
    python -m bench.completion --json --quick    # M=100 x N=20,000 only, fewer tasks (< 1 min)

Prints ONE JSON document. For each scenario (planted low rank + task/example biases + Gaussian
noise, and a heavy-tailed variant with Student-t example biases and noise) and each method:
RMSE×100 on unobserved entries, pooled F1 (label Z > row median, and the study's Z > 0),
precision@1 %, fit seconds, fold-in ms per task, the fold-in's peak traced memory (tracemalloc),
and — where it finishes in reasonable time — the paper-style refit (fit from scratch with the new
masked row appended) ms per task and its RMSE on the same tasks. Every number is measured in this
run; skipped measurements say why. The large matrix is a float32 memmap in a temporary directory.

Semantic baseline inputs are synthetic: example embeddings = planted example factors through a
random projection plus 3x as much noise, task embeddings likewise from task factors, so the
similarity carries a weak planted signal (the study measured weak correlations on real data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np

from forgetting.completion import make_completer
from forgetting.metrics import classification, precision_at, rmse_x100
from forgetting.probes import choose_probes
from forgetting.synthetic import Planted, planted_matrix

METHODS = ("additive", "knn", "knn_pearson", "mf", "als", "semantic")
K_PROBES = 30
# implicit-ALS mappings compared in the full mode (M=100 Gaussian scenario): why "graded" is the default.
ALS_VARIANTS: dict[str, dict[str, Any]] = {
    "naive_binary_recalculate": {"mapping": "binary", "fold": "recalculate"},
    "binary_explicit": {"mapping": "binary"},
    "signed_explicit": {"mapping": "signed"},
    "graded_recalculate": {"fold": "recalculate"},
}


def _embeddings(p: Planted, seed: int, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 99)
    a = rng.standard_normal((p.example_factors.shape[1], d)).astype(np.float32)
    ex = p.example_factors @ a + 3.0 * rng.standard_normal((p.example_factors.shape[0], d)).astype(
        np.float32
    )
    tf = p.task_factors / (p.task_factors.std(axis=0) + 1e-9)
    task = tf @ a + 3.0 * rng.standard_normal((tf.shape[0], d)).astype(np.float32)
    return ex.astype(np.float32), task.astype(np.float32)


def _scores(true: np.ndarray, pred: np.ndarray, probes: list[np.ndarray]) -> dict[str, float]:
    score = np.ones(true.shape, bool)
    for i, c in enumerate(probes):
        score[i, c] = False
    return {
        "rmse_x100": rmse_x100(true, pred, score),
        "f1_median": classification(true, pred, score, label="median").f1,
        "f1_positive": classification(true, pred, score, label="positive").f1,
        "precision_at_1pct": precision_at(true, pred, score, 0.01),
    }


def run_method(
    name: str,
    z: np.ndarray,
    known: np.ndarray,
    test: np.ndarray,
    seeds: list[int],
    emb: tuple[np.ndarray, np.ndarray],
    n_refit: int,
    refit_skip: str | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    n = z.shape[1]
    kw = dict(kwargs)
    if name == "semantic":
        kw["example_embeddings"] = emb[0]
    t0 = time.perf_counter()
    comp = make_completer(name, **kw).fit(z[known])
    fit_s = time.perf_counter() - t0
    true, preds, probes, fold_s = [], [], [], 0.0
    tracemalloc.start()
    for seed in seeds:
        cols = choose_probes(n, K_PROBES, seed=seed)
        for i in test:
            vals = np.asarray(z[i, cols])
            t0 = time.perf_counter()
            pred = comp.fold_in(cols, vals, task_embedding=emb[1][i])
            fold_s += time.perf_counter() - t0
            preds.append(pred)
            probes.append(cols)
            true.append(np.asarray(z[i]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out: dict[str, Any] = {"fit_s": round(fit_s, 3)}
    out.update(_scores(np.stack(true), np.stack(preds), probes))
    out["fold_in_ms_per_task"] = 1000.0 * fold_s / len(preds)
    out["fold_in_peak_traced_mb"] = peak / 2**20
    if refit_skip or n_refit == 0:
        out["refit_ms_per_task"] = None
        out["refit_note"] = refit_skip or "not measured"
        return out
    del comp
    refit = make_completer("refit", base=name, base_kwargs=kw).fit(z[known])
    cols = choose_probes(n, K_PROBES, seed=seeds[0])
    r_true, r_pred, f_pred, r_s = [], [], [], 0.0
    for i in test[:n_refit]:
        t0 = time.perf_counter()
        r_pred.append(refit.fold_in(cols, np.asarray(z[i, cols]), task_embedding=emb[1][i]))
        r_s += time.perf_counter() - t0
        r_true.append(np.asarray(z[i]))
        f_pred.append(preds[list(test).index(i)])
    tr = np.stack(r_true)
    out["refit_ms_per_task"] = 1000.0 * r_s / n_refit
    out["refit_tasks"] = n_refit
    out["refit_rmse_x100_same_tasks"] = _scores(tr, np.stack(r_pred), [cols] * n_refit)["rmse_x100"]
    out["fold_in_rmse_x100_same_tasks"] = _scores(tr, np.stack(f_pred), [cols] * n_refit)[
        "rmse_x100"
    ]
    out["refit_over_fold_in_time"] = out["refit_ms_per_task"] / max(
        out["fold_in_ms_per_task"], 1e-9
    )
    return out


def scenario(
    m: int,
    n: int,
    *,
    heavy: bool,
    seeds: list[int],
    n_test: int,
    n_refit: int,
    large: bool,
    workdir: str,
    als_variants: bool = False,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    out_arr = None
    if large:  # float32 memmap: the matrix lives on disk, pages come in as rows are read
        out_arr = np.lib.format.open_memmap(
            os.path.join(workdir, f"z_{int(heavy)}.npy"), mode="w+", dtype=np.float32, shape=(m, n)
        )
    p = planted_matrix(m, n, rank=5, noise=0.03, seed=7, heavy_tailed=heavy, out=out_arr)
    gen_s = time.perf_counter() - t0
    emb = _embeddings(p, 7)
    test = np.arange(m - n_test, m)
    known = np.arange(m - n_test)
    res: dict[str, Any] = {
        "name": f"planted-{'heavy-tailed' if heavy else 'gaussian'}",
        "M": m,
        "N": n,
        "known_rows": int(known.size),
        "test_tasks": int(test.size),
        "probes_k": K_PROBES,
        "seeds": seeds,
        "matrix_mb": m * n * 4 / 2**20,
        "memmap": large,
        "generation_s": round(gen_s, 2),
        "methods": {},
        "skipped": {},
    }
    for name in METHODS:
        if large and name == "als":
            from forgetting.completion import ALSConfig

            levels = ALSConfig().levels
            nnz = m * n * sum(levels)
            res["skipped"]["als"] = (
                f"not run: the graded mapping at M={m:,} x N={n:,} gives ~{nnz / 1e6:.0f}M implicit "
                f"nonzeros ({len(levels)} users per task liking the top {levels} fractions); at the "
                "~0.25 s per iteration per 1.35M nonzeros measured at M=100 that is minutes of fit "
                "on 2 shared cores"
            )
            continue
        skip = None
        if large and name != "additive":
            skip = (
                f"refit not measured at M={m:,} x N={n:,}: every refit is a fit on all known rows "
                "plus the new one; see refit_lower_bound_ms_per_task"
            )
        kwargs: dict[str, Any] = {}
        t0 = time.perf_counter()
        res["methods"][name] = run_method(
            name, p.z, known, test, seeds, emb, 1 if large else n_refit, skip, kwargs
        )
        res["methods"][name]["wall_s"] = round(time.perf_counter() - t0, 2)
        if skip:  # measured: one fit on the known rows alone, which a refit can only exceed
            res["methods"][name]["refit_lower_bound_ms_per_task"] = (
                1000.0 * res["methods"][name]["fit_s"]
            )
    if als_variants:
        res["als_variants"] = {
            label: run_method("als", p.z, known, test, seeds, emb, 0, "not measured", kw)
            for label, kw in ALS_VARIANTS.items()
        }
    del p, out_arr
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document (default)")
    ap.add_argument("--quick", action="store_true", help="M=100 x N=20,000 only, < 1 minute")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "completion",
        "mode": "quick" if args.quick else "full",
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "blas_threads": 1,
        },
        "goals": {
            "fold_in_vs_refit_speedup": ">= 100x at equal or better RMSE",
            "fold_in_ms_per_task_at_1000x200000": "< 50",
        },
        "scenarios": [],
    }
    with threadpool_limits(1, "blas"), tempfile.TemporaryDirectory() as workdir:
        for heavy in (False, True):
            if args.quick:
                doc["scenarios"].append(
                    scenario(
                        100,
                        20_000,
                        heavy=heavy,
                        seeds=[0],
                        n_test=10,
                        n_refit=1,
                        large=False,
                        workdir=workdir,
                    )
                )
            else:
                doc["scenarios"].append(
                    scenario(
                        100,
                        20_000,
                        heavy=heavy,
                        seeds=[0, 1, 2],
                        n_test=20,
                        n_refit=3,
                        large=False,
                        workdir=workdir,
                        als_variants=not heavy,
                    )
                )
        if not args.quick:
            for heavy in (False, True):
                doc["scenarios"].append(
                    scenario(
                        1000,
                        200_000,
                        heavy=heavy,
                        seeds=[0],
                        n_test=20,
                        n_refit=1,
                        large=True,
                        workdir=workdir,
                    )
                )
    doc["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    json.dump(doc, sys.stdout, indent=1, default=float)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
