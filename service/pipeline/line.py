"""`ftctl init`: create the model line and register release 0 (the base model) as @champion.

For the embedded worlds the base model is built by ftctl itself (pre-trained once, cached in the
workspace); a local Hugging Face directory can be registered instead with `--model DIR`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import ServiceError
from service.pipeline.compute import count_messages, step_messages
from service.pipeline.inputs import catalogue, load_or_measure_nll, load_upstream, load_world
from service.settings import Settings, save_settings
from service.tracking.jobs import run_job
from service.tracking.lineage import check_digest
from service.tracking.registry import CHAMPION, Registry
from service.tracking.store import TAG, RunHandle, Tracker


def init_line(settings: Settings, *, model_dir: Path | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    if model_dir is not None and not (model_dir / "config.json").exists():
        raise ServiceError(f"{model_dir} is not a Hugging Face model directory (no config.json); "
                           "pass the directory written by save_pretrained")
    if settings.upstream and model_dir is None:
        raise ServiceError("a line of your own upstream set needs your base model too: pass "
                           "--model DIR (a save_pretrained directory)")
    upstream = load_upstream(settings)
    if settings.tasks:
        catalogue(settings)  # a bad catalogue fails now, before the line exists
    tracker = Tracker(settings)
    try:
        return _init(settings, tracker, upstream, model_dir, say)
    except BaseException:
        tracker.discard_if_empty()  # a failed first init leaves no empty model line behind
        raise


def _init(settings: Settings, tracker: Tracker, upstream: Any, model_dir: Path | None,
          say: Callable[[str], None]) -> dict[str, Any]:
    registry = Registry(tracker)
    existing = registry.by_alias(CHAMPION)
    if existing is not None:
        check_digest(settings.model_line, existing, upstream.digest, upstream.source)
        say(f"model line {settings.model_line!r} already initialised: @champion is version "
            f"{existing.version}")
        save_settings(settings)
        return {"model_line": settings.model_line, "version": existing.version, "reused": True,
                "world": settings.world, "upstream": upstream.source}
    if model_dir is None:
        from training.world.pretrain import ensure_base_model

        world = load_world(settings)
        say(f"building the base model of world {world.name!r} (once; cached in {settings.workspace})")
        model_dir = Path(ensure_base_model(world, settings.workspace,
                                           progress=step_messages(say, "pre-training")))

    def body(run: RunHandle) -> dict[str, Any]:
        run.log_params({"settings": settings.to_dict(), "model_dir": str(model_dir)})
        # Measure before registering: a failure here leaves a FAILED run and no @champion.
        say(f"measuring the base model's NLL on {upstream.n} upstream examples")
        nll = load_or_measure_nll(settings, f"run-{run.run_id}", upstream, model_dir,
                                  progress=count_messages(say, "measuring the base model"))
        run.log_artifacts(model_dir, "model")
        version = registry.register(run.run_id, "model", {TAG + "parent_version": "none",
                                                          TAG + "task": "base", TAG + "method": "init",
                                                          TAG + "digest": upstream.digest})
        registry.set_alias(CHAMPION, version.version)
        say(f"registered the base model as version {version.version} @champion")
        import pandas as pd

        run.log_dataframe(pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources,
                                        "nll": nll, "heldout": upstream.heldout}),
                          "forgetting/base_nll.parquet")
        run.log_metrics({"upstream_nll_mean": float(nll.mean())})
        return {"model_line": settings.model_line, "version": version.version,
                "world": settings.world, "upstream": upstream.source, "tasks": settings.tasks,
                "upstream_examples": upstream.n,
                "upstream_digest": upstream.digest, "upstream_nll_mean": float(nll.mean())}

    result = run_job(tracker, kind="init", job_id=f"init-{settings.model_line}-{upstream.digest[:12]}",
                   name="init", tags={TAG + "digest": upstream.digest, TAG + "world": settings.world,
                                      TAG + "upstream": upstream.source,
                                      TAG + "tasks": settings.tasks or f"world {settings.world!r}"},
                   body=body)
    save_settings(settings)  # only once the line exists: a failed init changes no defaults
    return result


def promote(settings: Settings, version: int) -> dict[str, Any]:
    registry = Registry(Tracker(settings))
    v = registry.set_alias(CHAMPION, version)
    return {"champion": v.version, **v.to_dict()}


def rollback(settings: Settings, version: int | None = None) -> dict[str, Any]:
    """Point @champion back at `version`, or at the current champion's parent."""
    registry = Registry(Tracker(settings))
    current = registry.champion()
    if version is None:
        parent = current.tags.get(TAG + "parent_version", "none")
        if not parent.isdigit():
            raise ServiceError(f"version {current.version} is the base model; nothing to roll back to")
        version = int(parent)
    v = registry.set_alias(CHAMPION, version)
    return {"champion": v.version, "previous_champion": current.version}


def describe_line(settings: Settings) -> dict[str, Any]:
    """What the line is made of (`ftctl line show`): its base model and champion, its upstream
    set (where from, size, digest, sources, held-out size) and its task catalogue."""
    registry = Registry(Tracker(settings))
    upstream = load_upstream(settings)
    tasks = catalogue(settings)
    champion = registry.by_alias(CHAMPION)
    versions = registry.versions()
    base = versions[0] if versions else None
    sources: dict[str, int] = {}
    for src in upstream.sources:
        sources[src] = sources.get(src, 0) + 1
    return {
        "model_line": settings.model_line, "world": settings.world,
        "base_model": None if base is None else {"version": base.version, "source": base.source},
        "champion": None if champion is None else champion.version,
        "versions": len(versions),
        "upstream": {"from": upstream.source, "examples": upstream.n, "digest": upstream.digest,
                     "heldout": int(upstream.heldout.sum()), "sources": sources},
        "tasks": {"from": settings.tasks or f"world {settings.world!r}", "count": len(tasks)},
    }


def list_tasks(settings: Settings) -> list[dict[str, Any]]:
    """The line's task catalogue (`ftctl tasks list`): names, families, descriptions, where."""
    return [{"name": t.name, "family": t.family, "description": t.description,
             "path": getattr(t, "path", "") or "(embedded)"} for t in catalogue(settings).values()]
