"""`ftctl demo` — the main job on the embedded world, end to end, in-process.

1. init: build (once) and register the world's base model as version 1 @champion;
2. statistics jobs for `n_stats` tasks spread over the task families (parallel processes);
3. low-rank analysis of the resulting forgetting matrix;
4. a new, unseen task released from version 1 three ways — predicted replay (the default
   method), random replay at the same budget, no replay — and compared on held-out forgetting.
Finished jobs are reused, so a second `ftctl demo` only prints the tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.pipeline.analysis import analyze
from service.pipeline.inputs import load_world
from service.pipeline.line import init_line
from service.pipeline.stats import collect_stats
from service.release.request import ReleaseRequest, release_new_task
from service.settings import Settings
from service.tracking.runs import experiment_link
from service.tracking.store import Tracker


def pick_tasks(tasks: dict[str, Any], n_stats: int) -> tuple[list[str], str]:
    """`n_stats` tasks round-robin over the families (sorted, deterministic) and one unseen task
    from a family that is represented — the case matrix completion is for."""
    by_family: dict[str, list[str]] = {}
    for name in sorted(tasks):
        by_family.setdefault(tasks[name].family, []).append(name)
    families = sorted(by_family)
    new_task = by_family[families[0]][-1]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < n_stats and depth < max(len(v) for v in by_family.values()):
        for fam in families:
            names = [t for t in by_family[fam] if t != new_task]
            if depth < len(names) and len(chosen) < n_stats:
                chosen.append(names[depth])
        depth += 1
    return chosen, new_task


def run_demo(settings: Settings, *, n_stats: int = 12,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; the result holds each step's wall seconds (`seconds`),
    so every run reports what it cost on its machine (reused jobs make a rerun's figures small)."""
    say = progress or (lambda _m: None)
    seconds: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[step] = round(now - t, 1)
        t = now

    init = init_line(settings, progress=say)
    lap("init")
    world = load_world(settings)
    stats_tasks, new_task = pick_tasks(world.tasks, n_stats)
    say(f"statistics tasks: {', '.join(stats_tasks)}; new task: {new_task}")
    stats = collect_stats(settings, stats_tasks, progress=say)
    lap("stats")
    lowrank = analyze(settings)
    lap("analysis")
    # The controls first, so that the predicted release's run shows its held-out forgetting
    # beside theirs (service/release/report.py); reported predicted first.
    by_method = {}
    for method in ("none", "random", settings.method):
        req = ReleaseRequest(task=new_task, method=method, parent_version=init["version"],
                             promote=method == settings.method)
        by_method[method] = release_new_task(settings, req, progress=say)
    releases = [by_method[m] for m in (settings.method, "random", "none")]
    lap("releases")
    seconds["total"] = round(time.perf_counter() - t0, 1)
    return {"model_line": settings.model_line, "world": settings.world, "base_version": init["version"],
            "stats": stats, "lowrank": lowrank, "new_task": new_task, "releases": releases,
            "seconds": seconds,
            "ui_url": experiment_link(settings.resolved_tracking_uri if settings.tracking_uri.startswith("http")
                                      else "http://127.0.0.1:5000", Tracker(settings).experiment_id)}
