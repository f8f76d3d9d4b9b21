"""Release 0 of a world: pre-train the base model once, cache it in the workspace.

Usage::

    from training.world import load_world
    from training.world.pretrain import ensure_base_model
    base_dir = ensure_base_model(load_world("default"), ".ftctl/worlds")   # ~5 min on 2 cores, once
    base_dir = ensure_base_model(load_world("default"), ".ftctl/worlds")   # cached: instant

The base is a LLaMA built by `training.model.build_model(spec.arch, seed)` and pre-trained with
`training.finetune.finetune` on the world's whole chunk pool as plain text (warm-up, then
cosine decay; AdamW betas 0.9/0.95, weight decay 0.1, clip 1.0) — the same code path as task
fine-tuning, so "release 0" is made the way every later release is. The cache key is the pool
digest (chunks + tokenizer) + a hash of the spec, so a changed spec or rebuilt pool never reuses
a stale model. It is written to a temporary directory and renamed into place, so a killed build
leaves no half model behind. `pretrain.json` in the directory records the train-loss curve and
the upstream NLL curve (`upstream_nll_curve`: [[step, nll], ...] on a fixed sample of 256
upstream chunks, step 0 = the random init; see training.world.convergence), `pretrain.png` plots
both, and `base_report` (`ftctl world show-base`) reads them back with the convergence verdict.
Measuring the curve does not change the trained weights (same bytes with or without it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.atomic import atomic_path
from training.world.errors import WorldError
from training.world.registry import World

Progress = Callable[[int, int, dict[str, float]], None]


def base_model_dir(world: World, workspace_dir: str | os.PathLike[str]) -> Path:
    """Where `ensure_base_model` puts (or finds) this world's base model."""
    spec = world.base_model_spec
    # Named by what the model depends on (recipe + chunk pool), not by the world's name: worlds
    # that differ only in their upstream sample (default, study) share one pre-trained base.
    tag = f"{spec.kind}-{spec.key()}" + (f"-{world.pool_digest}" if spec.kind == "scratch" else "")
    return Path(workspace_dir) / "base" / tag


def pretrain_config(world: World, num_threads: int | None = None) -> Any:
    """The FinetuneConfig of the pre-training run (cosine schedule, plain text)."""
    from training.config import FinetuneConfig

    s = world.base_model_spec
    return FinetuneConfig(
        lr=s.lr,
        steps=s.steps,
        batch_size=s.batch_size,
        warmup_steps=s.warmup_steps,
        schedule="cosine",
        min_lr_ratio=s.min_lr_ratio,
        weight_decay=s.weight_decay,
        betas=(0.9, 0.95),
        clip=1.0,
        seed=s.seed,
        max_length=int(s.arch["max_position_embeddings"]),
        accelerator="cpu",
        precision="32-true",
        num_threads=num_threads,
        log_every=10,
    )


def loss_curve(history: list[dict[str, float]], every: int = 25) -> list[tuple[int, float]]:
    """(step, mean train loss over the last `every` steps) pairs: the curve in pretrain.json."""
    out, window = [], []
    for i, h in enumerate(history, start=1):
        window.append(float(h["loss"]))
        if i % every == 0 or i == len(history):
            out.append((i, round(sum(window) / len(window), 4)))
            window = []
    return out


def ensure_base_model(
    world: World,
    workspace_dir: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    num_threads: int | None = None,
    eval_every: int | None = None,
) -> Path:
    """The directory of the world's base model, pre-training (or converting) it on first use.

    Parameters
    ----------
    world : from `load_world`; its `base_model_spec` says how the base is made.
    workspace_dir : the cache root; the model lands in `<workspace_dir>/base/<world>-<key>`.
    progress : progress(step, total_steps, history entry) during pre-training.
    num_threads : torch CPU threads for pre-training (None = torch's default).
    eval_every : steps between two upstream NLL evaluations (None = 50); they never change the
        weights, so this is not part of the cache key.
    """
    if world.base_model_spec.kind == "smollm2":
        from training.world.smollm2 import ensure_smollm2

        return ensure_smollm2(workspace_dir)
    out = base_model_dir(world, workspace_dir)
    if (out / "pretrain.json").is_file():
        return out
    from training.finetune import finetune
    from training.model import build_model, save_model
    from training.world.convergence import EVAL_EVERY, UpstreamNLLCurve, eval_sample, plot_curves
    from training.world.tokenizer import load_hf_tokenizer

    spec = world.base_model_spec
    tok = load_hf_tokenizer(world.tokenizer_dir)
    model = build_model(dict(spec.arch), seed=spec.seed)
    examples = world.pretrain_examples()
    sample = eval_sample(world)
    curve = UpstreamNLLCurve(tok, sample, eval_every or EVAL_EVERY, spec.steps)
    t0 = time.perf_counter()
    res = finetune(
        model,
        tok,
        examples,
        pretrain_config(world, num_threads),
        progress=progress,
        callbacks=[curve],
    )
    seconds = time.perf_counter() - t0
    # A concurrent builder that finished first keeps its model in place (the first one wins).
    with atomic_path(out, keep_existing=True) as tmp:
        save_model(res.model, tok, tmp)
        tokens = sum(int(h["tokens"]) for h in res.history)  # the real (unpadded) tokens trained on
        record = {
            "world": world.name,
            "spec": spec.__dict__,
            "pool_digest": world.pool_digest,
            "params": sum(p.numel() for p in res.model.parameters()),
            "pool_chunks": len(examples),
            "steps": res.steps,
            "seconds": round(seconds, 1),
            "tokens": tokens,
            "eval_seconds": round(curve.seconds, 1),  # included in "seconds", not in tokens_per_s
            "tokens_per_s": round(tokens / max(seconds - curve.seconds, 1e-9)),
            "loss_curve": loss_curve(res.history),
            "eval_chunks": len(sample),
            "eval_every": curve.every,
            "upstream_nll_curve": curve.curve,
        }
        (tmp / "pretrain.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        plot_curves(record, tmp / "pretrain.png")
    if not (out / "pretrain.json").is_file():
        raise WorldError(f"{out} exists but holds no pretrain.json (an unfinished or foreign "
                         "build). Fix: delete it and run `ftctl init` again.")
    return out


def base_report(world: World, workspace_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What `pretrain.json` of the world's cached base says, plus the convergence verdict.

    Returns world, dir, built (bool), and when built: params, steps, seconds, tokens_per_s,
    upstream_nll_curve ([] for a base built before the curve was recorded), converged
    (True/False; None without a curve), relative_change of the last two evaluations, rule,
    plot (path of pretrain.png or None) and note (why there is no verdict, if there is none).
    """
    from training.world.convergence import RULE, converged, relative_change

    spec = world.base_model_spec
    if spec.kind != "scratch":
        raise WorldError(
            f"world {world.name!r} has a {spec.kind} base, which ftctl converts instead of "
            "pre-training, so it has no pre-training curve. Fix: use a scratch world "
            "(default, study or tiny)."
        )
    out = base_model_dir(world, workspace_dir)
    info: dict[str, Any] = {"world": world.name, "dir": str(out), "rule": RULE}
    rec_path = out / "pretrain.json"
    if not rec_path.is_file():
        info.update(
            built=False,
            converged=None,
            upstream_nll_curve=[],
            note=f"no base model in {out}: build it with `ftctl world show-base --build` "
            "or `ftctl init`.",
        )
        return info
    rec = json.loads(rec_path.read_text())
    curve = [(int(s), float(v)) for s, v in rec.get("upstream_nll_curve", [])]
    rc = relative_change(curve[1:])  # step 0 (random init) is never one of the last two
    info.update(
        built=True,
        params=rec.get("params"),
        steps=rec.get("steps"),
        seconds=rec.get("seconds"),
        tokens_per_s=rec.get("tokens_per_s"),
        eval_chunks=rec.get("eval_chunks"),
        loss_curve=rec.get("loss_curve", []),
        upstream_nll_curve=curve,
        converged=converged(curve[1:]),
        relative_change=None if rc is None else round(rc, 5),
        plot=str(out / "pretrain.png") if (out / "pretrain.png").is_file() else None,
    )
    if not curve:
        info["note"] = (
            "this base was built before the upstream NLL curve was recorded; rebuild it in a "
            "fresh workspace (`ftctl --workspace DIR world show-base --build`) to record it."
        )
    return info
