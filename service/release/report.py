"""What a reviewer sees on a release's own run in the MLflow UI (not only on its child runs):
the top-forgotten table with example text, the forgetting figures, the replay plan, and the
release's held-out forgetting per source beside the controls — finished releases of the same
task data from the same parent with another method (random, none, …), when there are any.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from service.tracking.rows import figures, top_forgotten
from service.tracking.store import TAG, RunHandle, Tracker

HELDOUT_SOURCE = "heldout_source."  # metric prefix: a release's held-out ΔNLL per upstream source


def log_release_view(run: RunHandle, row: pd.DataFrame, upstream: Any, title: str,
                     warmup_ids: Sequence[str], plan_ids: Sequence[str],
                     extra_sources: dict[str, str]) -> None:
    """On the release run itself: the measured row's top-forgotten table (with example text) and
    figures, and the replay plan as data — which examples, from which sources (`extra_sources`
    labels the ids that are not upstream examples: "self-generated", "earlier task T")."""
    import matplotlib.pyplot as plt

    run.log_table(top_forgotten(row, upstream.texts), "forgetting/top_forgotten.json")
    for name, fig in figures(row, title).items():
        run.log_figure(fig, name)
        plt.close(fig)  # type: ignore[arg-type]
    sources = dict(zip(upstream.ids, upstream.sources, strict=True))
    ids = list(dict.fromkeys([*warmup_ids, *plan_ids]))
    by_source = Counter(sources.get(i) or extra_sources.get(i, "other") for i in ids)
    labels = Counter(extra_sources.values())
    run.log_dict({"warmup_ids": list(warmup_ids), "plan_ids": list(plan_ids),
                  "distinct": len(ids), "by_source": dict(sorted(by_source.items())),
                  "self_generated": labels.get("self-generated", 0),
                  "earlier_tasks": sum(v for k, v in labels.items() if k.startswith("earlier"))},
                 "replay/plan.json")


def controls(tracker: Tracker, task_digest: str, parent_version: int, run_id: str) -> list[dict[str, Any]]:
    """Finished releases of the same task data from the same parent, other than this one (one per
    method and mode, the latest): their label, held-out mean and held-out forgetting per source —
    read from their metrics (`heldout_forgetting_mean`, `heldout_source.*`), no artifact download."""
    runs = tracker.find_runs({TAG + "kind": "release", TAG + "role": "job",
                              TAG + "task_digest": task_digest, TAG + "base_version": str(parent_version)})
    latest: dict[str, Any] = {}
    for r in runs:
        if r.info.run_id != run_id and "heldout_forgetting_mean" in r.data.metrics:
            t = r.data.tags
            label = t.get(TAG + "method", "?") + ("" if t.get(TAG + "method") in ("none", "random", "oracle")
                                                 else f" ({t.get(TAG + 'mode', '?')})")
            latest[label] = r
    return [{"label": label, "run_id": r.info.run_id, "heldout": r.data.metrics["heldout_forgetting_mean"],
             "per_source": {k.split(".", 1)[1]: v for k, v in r.data.metrics.items()
                            if k.startswith(HELDOUT_SOURCE)}}
            for label, r in sorted(latest.items())]


def log_comparison(run: RunHandle, label: str, heldout: float | None, per_source: Mapping[str, float],
                   others: list[dict[str, Any]]) -> None:
    """This release's held-out forgetting per source beside the controls' (a figure and a table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [{"label": f"{label} (this release)", "heldout": heldout, "per_source": dict(per_source)},
            *others]
    run.log_dict({"releases": rows}, "comparison/heldout_vs_controls.json")
    sources = sorted({s for r in rows for s in r["per_source"]})
    if not sources:
        return
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(rows)
    x = np.arange(len(sources))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r["per_source"].get(s, np.nan) for s in sources], width,
               label=f"{r['label']}: {r['heldout']:.4f}" if r["heldout"] is not None else r["label"])
    ax.set_xticks(x + 0.4 - width / 2, sources, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="held-out ΔNLL (mean)", title="held-out forgetting per source vs the controls")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.log_figure(fig, "figures/heldout_vs_controls.png")
    plt.close(fig)
