"""Predicting a task's forgetting row and recommending its replay, and the leave-tasks-out
evaluation of the completion methods on the collected matrix.

Usage (what the CLI calls)::

    evaluate_methods(settings, methods=("additive", "knn_pearson", "mf"), k=30, seeds=range(10))
    predict_task(settings, "translate_deu", method="mf", top=20)
    recommend_replay(settings, "translate_deu", budget=10)

A task that already has a full statistics row is predicted from k of its own measured entries
(leave-one-task-out, scored against the rest of its true row); any other task is fine-tuned
once from the champion and only its k probes are measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.errors import ServiceError
from service.pipeline.inputs import (
    Upstream,
    job_context,
    load_or_measure_nll,
    load_upstream,
    load_world,
    resolve_task,
)
from service.settings import Settings
from service.tracking.lineage import model_key
from service.tracking.matrix import assemble
from service.tracking.registry import Registry
from service.tracking.store import TAG, Tracker


def embeddings(settings: Settings, upstream: Upstream, task_names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """MiniLM embeddings of the upstream examples and of the named tasks (cached on disk): a
    world preset's tasks in one batch, any other task (your catalogue's, a path) from its own
    training examples."""
    from training.world.embeddings import embed_texts, example_text, task_embedding, task_embeddings

    cache = settings.cache_dir / "embeddings"
    ex = embed_texts([example_text(e) for e in upstream.examples], cache)
    world = None if settings.tasks else load_world(settings)
    preset = [t for t in task_names if world is not None and t in world.tasks]
    by_task = task_embeddings(world, cache, preset) if preset else {}
    for name in task_names:
        if name not in by_task:
            by_task[name] = task_embedding(resolve_task(settings, name).train, cache)
    return ex, by_task


def make_method(settings: Settings, method: str, upstream: Upstream) -> Any:
    from forgetting.completion import make_completer

    if method.startswith("semantic"):
        ex, _ = embeddings(settings, upstream, [])
        return make_completer(method, example_embeddings=ex)
    return make_completer(method)


def evaluate_methods(settings: Settings, *, methods: Sequence[str], k: int, seeds: Sequence[int],
                     split: str = "random", probe_strategy: str = "random",
                     log: bool = True, split_seeds: Sequence[int] = ()) -> dict[str, Any]:
    """Leave-tasks-out evaluation on the line's matrix; with `split_seeds` (>= 2, random split)
    the split is repeated with other test tasks and methods are compared by split
    (forgetting.evaluate.evaluate_splits, under "splits" in the result)."""
    from forgetting.evaluate import EvalConfig, evaluate, evaluate_splits

    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    m = assemble(tracker, upstream, base_version=Registry(tracker).champion().version,
                 min_rows=3).matrix
    if m.values.shape[0] < 3:
        raise ServiceError(f"evaluation needs at least 3 full rows, the matrix has "
                           f"{m.values.shape[0]}; collect more with `ftctl stats collect`")
    families = [r.extra.get("family", "") for r in m.rows]
    ex_emb = task_emb = None
    if any(m.startswith("semantic") for m in methods):
        ex_emb, by_task = embeddings(settings, upstream, [r.task for r in m.rows])
        task_emb = np.stack([by_task[r.task] for r in m.rows])
    cfg = EvalConfig(methods=tuple(methods), k=k, seeds=tuple(seeds), split=split,
                     probe_strategy=probe_strategy)
    extra = {"families": families, "exclude": upstream.heldout, "example_embeddings": ex_emb,
             "task_embeddings": task_emb}
    report = evaluate(m.values, cfg, **extra).to_dict()
    result = {"rows": m.values.shape[0], "columns": m.values.shape[1], "report": report}
    if len(split_seeds) >= 2 and split == "random":
        splits = evaluate_splits(m.values, cfg, split_seeds, **extra)
        splits.pop("reports")  # the first split's report is `report`; the rest are summarised
        result["splits"] = splits
    if log:
        with tracker.run("evaluation", tags={TAG + "kind": "evaluation", TAG + "role": "analysis"}) as run:
            run.log_dict(result, "analysis/evaluation.json")
            run.log_params({"methods": ",".join(methods), "k": k, "seeds": len(seeds), "split": split})
            for name, res in report["results"].items():
                run.log_metrics({f"{name}.{metric}": v["mean"] for metric, v in res["metrics"].items()
                                 if isinstance(v.get("mean"), int | float)})
            result["run_id"] = run.run_id
    return result


def predict_task(settings: Settings, task_ref: str, *, method: str, top: int = 20,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Predicted forgetting row of a task from k probes, with the top predicted examples."""
    from forgetting.metrics import precision_at, rmse_x100, spearman_rows
    from forgetting.probes import choose_probes

    say = progress or (lambda _m: None)
    ctx = job_context(settings)
    tracker, registry, parent, upstream = ctx.tracker, ctx.registry, ctx.parent, ctx.upstream
    task = resolve_task(settings, task_ref)
    got = assemble(tracker, upstream, base_version=parent.version, exclude_tasks=frozenset({task.name}))
    completer = make_method(settings, method, upstream)
    if got.matrix.values.shape[0] < completer.min_rows:
        raise ServiceError(f"{method} needs {completer.min_rows} known rows besides {task.name}; the "
                           f"matrix has {got.matrix.values.shape[0]}. Collect more with `ftctl stats collect`")
    completer.fit(got.matrix.values)
    probes = choose_probes(upstream.n, settings.k, seed=settings.seed, exclude=upstream.heldout)
    own = assemble(tracker, upstream, base_version=parent.version)
    own_rows = [i for i, r in enumerate(own.matrix.rows) if r.task == task.name]
    truth = None
    if own_rows:
        truth = own.matrix.values[own_rows[-1]].astype(np.float64)
        delta = truth[probes]
        say(f"{task.name} has a measured row: predicting it from {len(probes)} of its entries")
    else:
        from service.pipeline.compute import TrainSpec, task_steps, train_and_measure

        say(f"fine-tuning {task.name} once to measure its {len(probes)} probes")
        before = load_or_measure_nll(settings, model_key(parent), upstream,
                                     registry.local_dir(parent))
        out = train_and_measure(TrainSpec(settings=settings, task_ref=task_ref,
                                          model_dir=str(registry.local_dir(parent)),
                                          steps=task_steps(settings), measure=probes,
                                          seed=settings.seed))
        delta = out.nll_after - before[probes]
    task_emb = None
    if method == "semantic":
        from training.world.embeddings import task_embedding

        task_emb = task_embedding(task.train, settings.cache_dir / "embeddings")
    pred = np.asarray(completer.fold_in(probes, delta, task_embedding=task_emb), dtype=np.float64)
    order = np.argsort(-pred)
    result: dict[str, Any] = {
        "task": task.name, "method": method, "k": len(probes), "known_rows": got.matrix.values.shape[0],
        "probe_mean_delta": float(np.mean(delta)),
        "predicted_mean": float(pred.mean()),
        "predicted_per_source": {s: float(pred[np.asarray(upstream.sources) == s].mean())
                                 for s in sorted(set(upstream.sources))},
        "top": [{"example_id": upstream.ids[i], "source": upstream.sources[i],
                 "predicted": float(pred[i]), "heldout": bool(upstream.heldout[i]),
                 "text": upstream.texts[upstream.ids[i]][:160]} for i in order[:top]],
        "predicted": pred,
    }
    if truth is not None:
        score = np.ones((1, upstream.n), bool)
        score[0, probes] = False
        t, p = truth[None], pred[None]
        result["versus_measured"] = {"rmse_x100": rmse_x100(t, p, score),
                                     "spearman": spearman_rows(t, p, score),
                                     "precision_at_5pct": precision_at(t, p, score, 0.05)}
    return result


def recommend_replay(settings: Settings, task_ref: str, *, method: str, budget: int,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The upstream examples to replay for a task: sampled ∝ softmax(pred/T), never held-out."""
    from forgetting.replay import sample_replay

    if budget < 1:
        raise ServiceError(f"budget must be >= 1 example, got {budget}")
    upstream = load_upstream(settings)
    pred = predict_task(settings, task_ref, method=method, top=0, progress=progress)
    plan = sample_replay(np.asarray(pred["predicted"]), budget, temperature=settings.temperature,
                         exclude=upstream.heldout, seed=settings.seed)
    return {"task": pred["task"], "method": method, "budget": budget,
            "temperature": settings.temperature,
            "replay": [{"example_id": upstream.ids[i], "source": upstream.sources[i],
                        "predicted": float(pred["predicted"][i]), "weight": float(w)}
                       for i, w in zip(plan.indices, plan.weights, strict=True)]}
