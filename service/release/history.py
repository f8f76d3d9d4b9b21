"""The model line over time: every version of a lineage (base → … → version) with its chain
figures and its margin to each gate budget — what a reviewer reads before trusting a champion.

    points = line_points(registry, registry.champion())   # base first
    fig = line_figure(points, settings)                     # 3 panels, one point per version
    log_line_view(run, registry, version, settings)        # figures/model_line.png + chain/line.json

Read from the registry's version tags alone (`promotion.chain_tags`: ΔNLL vs parent, vs base,
the largest earlier-task loss increase), so the view costs no download and no measurement. Every
registered release logs it on its own run (`stages.finish`); `ftctl release line` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from service.settings import Settings
from service.tracking.lineage import ancestry
from service.tracking.registry import Registry, Version
from service.tracking.store import TAG, RunHandle


@dataclass(frozen=True)
class LinePoint:
    """One version of a lineage; None: not measured (the base, a release older than the figure)."""

    version: int
    task: str
    method: str
    gate: str
    aliases: tuple[str, ...]
    vs_parent: float | None  # held-out ΔNLL against its parent (nats)
    vs_base: float | None  # held-out ΔNLL against the line's base
    earlier_max: float | None  # largest test-loss increase of an earlier task of its chain

    def margins(self, settings: Settings) -> dict[str, float | None]:
        """Budget − figure for each chain budget of the gate (> 0: inside; None: off or unmeasured)."""
        pairs = {"vs_parent": (settings.gate_max_heldout_forgetting, self.vs_parent),
                 "vs_base": (settings.gate_max_cumulative_forgetting, self.vs_base),
                 "earlier_max": (settings.gate_max_earlier_task_loss_increase, self.earlier_max)}
        return {k: (b - v if b and v is not None else None) for k, (b, v) in pairs.items()}

    def to_dict(self, settings: Settings) -> dict[str, Any]:
        return {**asdict(self), "margins": self.margins(settings)}


def _num(tags: dict[str, str], key: str) -> float | None:
    raw = tags.get(TAG + key)
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def line_points(registry: Registry, version: Version) -> list[LinePoint]:
    """`version`'s lineage, base first, from the registry's tags."""
    out = []
    for v in reversed(ancestry(registry, version)):
        base = v.tags.get(TAG + "parent_version", "none") == "none"
        out.append(LinePoint(
            version=v.version, task=v.tags.get(TAG + "task", "base" if base else "?"),
            method=v.tags.get(TAG + "method", ""), gate=v.tags.get(TAG + "gate", ""),
            aliases=tuple(v.aliases), vs_parent=_num(v.tags, "heldout_forgetting"),
            vs_base=0.0 if base else _num(v.tags, "heldout_vs_base"),
            earlier_max=_num(v.tags, "earlier_loss_increase_max")))
    return out


def line_figure(points: list[LinePoint], settings: Settings) -> Any:
    """Three panels over the lineage: drift from the base, forgetting per release, the worst
    earlier-task retention — each with its gate budget as a dashed line (when on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(points)))
    labels = [f"v{p.version}\n{p.task[:14]}" for p in points]
    panels = (("vs_base", "held-out ΔNLL vs base (nats)", settings.gate_max_cumulative_forgetting),
              ("vs_parent", "held-out ΔNLL vs parent (nats)", settings.gate_max_heldout_forgetting),
              ("earlier_max", "largest earlier-task Δloss (nats)",
               settings.gate_max_earlier_task_loss_increase))
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 1.2 * len(points) * 3), 3.4))
    for ax, (key, title, budget) in zip(axes, panels, strict=True):
        ys = [getattr(p, key) for p in points]
        xs = [i for i, y in zip(x, ys, strict=True) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], "o-", color="C0")
        for i, p in enumerate(points):
            if p.gate == "fail" and getattr(p, key) is not None:
                ax.plot(i, getattr(p, key), "x", color="C3", ms=9)
        if budget:
            ax.axhline(budget, ls="--", color="C3", lw=1, label=f"gate budget {budget:g}")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, labels, fontsize=6)
        ax.axhline(0, color="0.7", lw=0.5)
    fig.suptitle(f"model line {settings.model_line}: lineage of v{points[-1].version} "
                 "(x: failed its gate)", fontsize=9)
    fig.tight_layout()
    return fig


def log_line_view(run: RunHandle, registry: Registry, version: int, settings: Settings) -> None:
    """The lineage view of `version` on a release's run (figure + table)."""
    import matplotlib.pyplot as plt

    points = line_points(registry, registry.get(version))
    run.log_dict([p.to_dict(settings) for p in points], "chain/line.json")
    fig = line_figure(points, settings)
    run.log_figure(fig, "figures/model_line.png")
    plt.close(fig)
