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
from service.pipeline.inputs import (
    catalogue,
    encoding,
    load_or_measure_nll,
    load_upstream,
    load_world,
    nll_cache,
)
from service.settings import Settings, save_settings
from service.tracking.jobs import run_job
from service.tracking.lineage import check_digest, check_encoding
from service.tracking.registry import CHAMPION, Registry
from service.tracking.store import TAG, RunHandle, Tracker


def resolve_model(settings: Settings, ref: str) -> Path:
    """`--model`: a local save_pretrained directory, or a hub name ("org/name") downloaded once
    into the workspace (offline: fails in seconds with the fix)."""
    from training.errors import TrainingError
    from training.model import HUB_NAME, fetch_model

    path = Path(ref).expanduser()
    if path.exists() or not HUB_NAME.match(ref):
        if not (path / "config.json").exists():
            raise ServiceError(f"{path} is not a Hugging Face model directory (no config.json); "
                               "pass the directory written by save_pretrained, or a hub name "
                               "such as HuggingFaceTB/SmolLM2-135M")
        return path.resolve()
    try:
        return fetch_model(ref, settings.workspace / "models" / "hub" / ref.replace("/", "--"),
                           trust_remote_code=settings.trust_remote_code).resolve()
    except TrainingError as e:
        raise ServiceError(f"{ref} is not a local directory, and as a hub name: {e}") from None


def init_line(settings: Settings, *, model: str | Path | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    if settings.upstream and model is None:
        raise ServiceError("a line of your own upstream set needs your base model too: pass "
                           "--model DIR (a save_pretrained directory) or a hub name")
    upstream = load_upstream(settings)
    if settings.tasks:
        catalogue(settings)  # a bad catalogue fails now, before the line exists
    model_dir = resolve_model(settings, str(model)) if model is not None else None
    tracker = Tracker(settings)
    try:
        return _init(settings, tracker, upstream, model_dir, say)
    except BaseException:
        tracker.discard_if_empty()  # a failed first init leaves no empty model line behind
        raise


def check_long_records(settings: Settings, model_dir: Path, upstream: Any,
                       say: Callable[[str], None]) -> int:
    """Upstream records longer than the line's max_length (or the model's context): counted and
    shown (they are trained and measured on their last tokens), or refused with the fix."""
    from training.errors import TrainingError
    from training.model import directory_context, load_tokenizer
    from training.upstream import over_long

    enc = encoding(settings)
    context = directory_context(model_dir)
    limit = min(enc.max_length, context or enc.max_length)
    try:
        tok = load_tokenizer(model_dir, trust_remote_code=settings.trust_remote_code)
    except TrainingError as e:
        raise ServiceError(str(e)) from None
    long_ids = over_long(upstream.examples, tok, limit, chat_template=enc.chat_template)
    if not long_ids:
        return 0
    what = (f"{len(long_ids):,} of {upstream.n:,} upstream records are longer than {limit} tokens "
            f"(max_length {enc.max_length}, model context {context or 'unknown'})")
    if settings.long_records == "refuse":
        raise ServiceError(
            f"{what}, e.g. {', '.join(long_ids[:3])}. Fix: split or drop them, raise --max-length "
            f"(up to the model's context), or pass --long-records truncate to train and measure "
            f"their last {limit} tokens")
    say(f"{what}: trained and measured on their last {limit} tokens (--long-records refuse "
        "refuses them instead)")
    return len(long_ids)


def _init(settings: Settings, tracker: Tracker, upstream: Any, model_dir: Path | None,
          say: Callable[[str], None]) -> dict[str, Any]:
    registry = Registry(tracker)
    existing = registry.by_alias(CHAMPION)
    enc = encoding(settings).describe()
    if existing is not None:
        check_digest(settings.model_line, existing, upstream.digest, upstream.source)
        check_encoding(settings.model_line, registry.versions()[0], enc)
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
    truncated = check_long_records(settings, model_dir, upstream, say)

    def body(run: RunHandle) -> dict[str, Any]:
        run.log_params({"settings": settings.to_dict(), "model_dir": str(model_dir)})
        # Measure before registering: a failure here leaves a FAILED run and no @champion.
        say(f"measuring the base model's NLL on {upstream.n} upstream examples")
        # Cached by the weights' content, then under the registering run's key (the one every
        # job reads): the same base model is measured once per cache, whichever run registers it
        # (a line re-initialised in a new workspace that shares the cache, a resumed bench).
        nll = load_or_measure_nll(settings, weights_key(model_dir), upstream, model_dir,
                                  progress=count_messages(say, "measuring the base model"))
        nll_cache(settings, f"run-{run.run_id}", upstream).put(upstream.ids, nll, complete=True)
        run.log_artifacts(model_dir, "model")
        version = registry.register(run.run_id, "model", {TAG + "parent_version": "none",
                                                          TAG + "task": "base", TAG + "method": "init",
                                                          TAG + "digest": upstream.digest,
                                                          TAG + "encoding": enc})
        registry.set_alias(CHAMPION, version.version)
        say(f"registered the base model as version {version.version} @champion")
        import pandas as pd

        run.log_dataframe(pd.DataFrame({"example_id": upstream.ids, "source": upstream.sources,
                                        "nll": nll, "heldout": upstream.heldout}),
                          "forgetting/base_nll.parquet")
        run.log_metrics({"upstream_nll_mean": float(nll.mean())})
        return {"model_line": settings.model_line, "version": version.version,
                "world": settings.world, "upstream": upstream.source, "tasks": settings.tasks,
                "upstream_examples": upstream.n, "encoding": enc, "truncated_records": truncated,
                "upstream_digest": upstream.digest, "upstream_nll_mean": float(nll.mean())}

    result = run_job(tracker, kind="init", job_id=f"init-{settings.model_line}-{upstream.digest[:12]}",
                   name="init", tags={TAG + "digest": upstream.digest, TAG + "world": settings.world,
                                      TAG + "upstream": upstream.source, TAG + "encoding": enc,
                                      TAG + "tasks": settings.tasks or f"world {settings.world!r}"},
                   body=body)
    save_settings(settings)  # only once the line exists: a failed init changes no defaults
    return result


def weights_key(model_dir: Path) -> str:
    """NLL cache key of a model directory by content: sha256 over its files' names and bytes
    (streamed: a 542 MB checkpoint hashes in about a second without being held in memory)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(model_dir).as_posix().encode() + b"\0")
            with p.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
    return f"weights-{h.hexdigest()[:20]}"


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
        "encoding": encoding(settings).describe(), "long_records": settings.long_records,
        "trust_remote_code": settings.trust_remote_code,
    }


def list_tasks(settings: Settings) -> list[dict[str, Any]]:
    """The line's task catalogue (`ftctl tasks list`): names, families, descriptions, where."""
    return [{"name": t.name, "family": t.family, "description": t.description,
             "path": getattr(t, "path", "") or "(embedded)"} for t in catalogue(settings).values()]
