"""Analyses of the forgetting matrix: low-rank structure (`ftctl forgetting analyze`), the
leave-tasks-out evaluation of completion methods (`ftctl forgetting evaluate`), and a replay
recommendation for a task (`ftctl replay recommend`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.pipeline.inputs import load_upstream
from service.settings import Settings
from service.tracking.matrix import AssembledMatrix, assemble
from service.tracking.store import TAG, Tracker

NULL_DRAWS = 20  # column-permuted copies behind each R² null
STUDY_OLMO7B_R2 = {1: 0.512, 2: 0.633, 3: 0.715, 4: 0.762, 5: 0.790}  # reference study, 85 tasks


def _matrix(tracker: Tracker, settings: Settings, min_rows: int) -> AssembledMatrix:
    """The matrix of rows measured on the current @champion (or its ancestors when too few):
    rows of different base models are not comparable."""
    from service.tracking.registry import Registry

    upstream = load_upstream(settings)
    got = assemble(tracker, upstream, base_version=Registry(tracker).champion().version,
                   min_rows=min_rows)
    if got.matrix.values.shape[0] < min_rows:
        raise ServiceError(
            f"the forgetting matrix has {got.matrix.values.shape[0]} rows, this needs at least "
            f"{min_rows}; collect more with `ftctl stats collect TASK… | --all`")
    return got


def analyze(settings: Settings, *, log: bool = True, figure_dir: Path | None = None) -> dict[str, Any]:
    """R² of the low-rank and structured fits; logged as an analysis run with the heatmap and the
    R²-by-rank curve (also written as PNGs to `figure_dir` when given)."""
    import matplotlib.pyplot as plt

    from forgetting.lowrank import analyze_low_rank
    from forgetting.stats import permutation_null_r2

    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    got = _matrix(tracker, settings, 2)
    report = analyze_low_rank(got.matrix.values, range(1, 11), seed=settings.seed).to_dict()
    m = got.matrix
    z = m.values
    # The same ranks fitted to copies whose columns are permuted across tasks independently:
    # with few rows a structureless matrix already has a sizeable R² (statistics rules).
    null = permutation_null_r2(z, range(1, 11), draws=NULL_DRAWS, seed=settings.seed)
    result = {"rows": z.shape[0], "columns": z.shape[1], "tasks": [r.task for r in m.rows],
              "report": report, "null_r2": {str(k): v for k, v in null.items()},
              "null_draws": NULL_DRAWS, "study_olmo7b_r2": STUDY_OLMO7B_R2,
              "mean_forgetting": float(np.nanmean(z)), "frac_positive": float(np.nanmean(z > 0))}
    figs = _figures(m, report, upstream.sources, result["null_r2"]) if log or figure_dir else {}
    if figure_dir is not None:
        figure_dir.mkdir(parents=True, exist_ok=True)
        for name, fig in figs.items():
            fig.savefig(figure_dir / Path(name).name, dpi=120)
    if log:
        with tracker.run("analysis", tags={TAG + "kind": "analysis", TAG + "role": "analysis"}) as run:
            run.log_dict(result, "analysis/lowrank.json")
            run.log_metrics({f"r2_rank_{k}": v for k, v in report["svd_r2"].items()}
                            | {f"r2_null_rank_{k}": v["null_mean"] for k, v in null.items()}
                            | {"r2_additive": report["additive_r2"]})
            for name, fig in figs.items():
                run.log_figure(fig, name)
            result["run_id"] = run.run_id
    for fig in figs.values():
        plt.close(fig)
    return result


def source_table(settings: Settings) -> dict[str, Any]:
    """Mean forgetting of each task's row per upstream source: which sources each task makes the
    model forget (rows ordered by family, then task)."""
    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    m = _matrix(tracker, settings, 1).matrix
    src = np.asarray(upstream.sources)
    sources = sorted(set(upstream.sources))
    rows = []
    for i, r in sorted(enumerate(m.rows), key=lambda x: (x[1].extra.get("family", ""), x[1].task)):
        z = m.values[i]
        rows.append({"task": r.task, "family": r.extra.get("family", ""), "mean": float(np.nanmean(z)),
                     "per_source": {s: float(np.nanmean(z[src == s])) for s in sources}})
    return {"sources": sources, "tasks": rows}


def _figures(m: Any, report: dict[str, Any], sources: list[str],
             null: dict[str, dict[str, float]]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Rows ordered by task family, columns by upstream source: the blocks are the structure.
    order_rows = sorted(range(len(m.rows)), key=lambda i: (m.rows[i].extra.get("family", ""), m.rows[i].task))
    z = m.values[order_rows][:, np.argsort(np.asarray(sources), kind="stable")]
    heat, ax = plt.subplots(figsize=(9, max(3, 0.18 * z.shape[0] + 1)))
    lim = float(np.nanquantile(np.abs(z), 0.98)) or 1.0
    im = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(z.shape[0]), [m.rows[i].task for i in order_rows], fontsize=6)
    ax.set(xlabel="upstream example", title="forgetting ΔNLL (task × upstream example)")
    heat.colorbar(im, ax=ax, fraction=0.03)
    heat.tight_layout()
    curve, ax2 = plt.subplots(figsize=(5, 3.5))
    ranks = sorted(int(k) for k in report["svd_r2"])
    ax2.plot(ranks, [report["svd_r2"][str(r)] for r in ranks], "o-", label="ftctl world")
    ax2.plot(ranks, [null[str(r)]["null_mean"] for r in ranks], "x:", color="C3",
             label="null: columns permuted")
    ax2.plot(list(STUDY_OLMO7B_R2), list(STUDY_OLMO7B_R2.values()), "s--", label="study: OLMo-7B")
    ax2.axhline(report["additive_r2"], color="gray", ls=":", label="additive")
    ax2.set(xlabel="rank", ylabel="R²", ylim=(0, 1), title="low-rank fit of the forgetting matrix")
    ax2.legend()
    curve.tight_layout()
    return {"figures/heatmap.png": heat, "figures/r2_by_rank.png": curve}
