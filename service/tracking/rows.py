"""A forgetting row as it is logged: the per-example table, its summary metrics and figures.

A row is one DataFrame with ROW_COLUMNS (example_id, source, nll_before, nll_after, delta,
replayed, heldout). It goes to MLflow as one parquet artifact — never one metric per example —
plus a handful of summary metrics, a `log_table` of the 50 most-forgotten examples with their
text (visible in the MLflow UI), and two figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from service.tracking.store import ROW_ARTIFACT, ROW_COLUMNS, RunHandle


def make_row(
    example_ids: Sequence[str],
    sources: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    *,
    replayed: set[str] | frozenset[str] = frozenset(),
    heldout: np.ndarray | None = None,
) -> pd.DataFrame:
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if not (len(example_ids) == len(sources) == len(before) == len(after)):
        raise ValueError("row columns must have equal lengths")
    return pd.DataFrame(
        {
            "example_id": list(example_ids),
            "source": list(sources),
            "nll_before": before,
            "nll_after": after,
            "delta": after - before,
            "replayed": [i in replayed for i in example_ids],
            "heldout": np.zeros(len(example_ids), bool) if heldout is None else np.asarray(heldout, bool),
        },
        columns=list(ROW_COLUMNS),
    )


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """Summary metrics of a row: mean, p90, share forgotten, per-source and held-out means."""
    d = df["delta"].to_numpy(dtype=np.float64)
    out: dict[str, float] = {
        "forgetting_mean": float(np.mean(d)),
        "forgetting_p90": float(np.quantile(d, 0.9)),
        "forgetting_frac_positive": float(np.mean(d > 0)),
        "examples_measured": float(len(d)),
        "examples_replayed_in_row": float(df["replayed"].sum()),
    }
    held = df.loc[df["heldout"], "delta"]
    if len(held):
        out["heldout_forgetting_mean"] = float(held.mean())
    for source, mean in df.groupby("source")["delta"].mean().items():
        out[f"forgetting_source.{source}"] = float(mean)
    return out


def top_forgotten(df: pd.DataFrame, texts: Mapping[str, str], n: int = 50) -> pd.DataFrame:
    top = df.nlargest(n, "delta")[["example_id", "source", "delta", "nll_before", "nll_after"]].copy()
    top["text"] = [texts.get(i, "")[:400] for i in top["example_id"]]
    return top.reset_index(drop=True)


def figures(df: pd.DataFrame, title: str) -> dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(df["delta"], bins=50, color="#3b6ea8")
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="ΔNLL (nats/token), > 0 = forgotten", ylabel="upstream examples", title=title)
    hist.tight_layout()

    bars, ax2 = plt.subplots(figsize=(6, 3.5))
    means = df.groupby("source")["delta"].mean().sort_values()
    ax2.barh(means.index.astype(str), means.to_numpy(), color="#c0504d")
    ax2.set(xlabel="mean ΔNLL", title=f"{title}: forgetting per source")
    bars.tight_layout()
    return {"figures/forgetting_hist.png": hist, "figures/forgetting_by_source.png": bars}


def log_row(run: RunHandle, df: pd.DataFrame, texts: Mapping[str, str], title: str,
            views: bool = True) -> dict[str, float]:
    """Log a row (parquet) and its summary metrics, and (views) the top-50 table and figures;
    return the metrics. A release logs its views on its own run, so its measure child skips them."""
    import matplotlib.pyplot as plt

    run.log_dataframe(df, ROW_ARTIFACT)
    metrics = summarize(df)
    run.log_metrics(metrics)
    if not views:
        return metrics
    run.log_table(top_forgotten(df, texts), "forgetting/top_forgotten.json")
    for name, fig in figures(df, title).items():
        run.log_figure(fig, name)
        plt.close(fig)  # type: ignore[arg-type]
    return metrics
