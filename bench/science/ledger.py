"""A committed ledger of what a long grid has measured, so the grid resumes on a new machine.

A science workspace (MLflow store, artifacts, caches) lives under bench/out/ and is gone when the
machine is. A grid that needs more CPU than one session has (SmolLM2-135M on 2 cores: ~18 min per
statistics row, ~6 min per release) would then start over every session. The ledger keeps only
what was measured — small, plain files meant to be committed — and puts it back:

    ledger/rows/<task>.parquet   a statistics row as logged (forgetting/row.parquet)
    ledger/rows/<task>.json      its job id, ftctl tags, metrics and recorded result
    ledger/nll/weights-*.npz     the base model's "before" NLLs (training.cache.NllCache, keyed by
                                 the weights' content: `service.pipeline.line.weights_key`)
    ledger/results.json          the bench's results (finished release cells among them)

`restore_cache` runs before the line is made (the NLL cache files are copied back), and
`restore` after it: each ledger row whose job id is the one this workspace would give that task
(same world, base version, recipe, seed, upstream digest —
`service.pipeline.stats.stats_job_id`) becomes a FINISHED statistics job again
(tagged `ftctl.imported_from=ledger`), so `collect_stats` reuses it; a row measured under other
settings is reported and left out, never served as this setup's. `save` runs after each finished
row and each finished release cell. The release cells themselves are skipped by the bench when
results.json already holds them without an error (bench.science.__main__).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from common.atomic import atomic_path, write_text
from service.settings import Settings


def save(settings: Settings, ledger: Path) -> int:
    """Copy every finished statistics row of the workspace (and the NLL cache) into `ledger`;
    returns how many rows were new. Rows already in the ledger are not rewritten."""
    from service.tracking.store import TAG, Tracker

    tracker = Tracker(settings)
    rows = ledger / "rows"
    rows.mkdir(parents=True, exist_ok=True)
    new = 0
    for run in tracker.find_runs({TAG + "kind": "stats", TAG + "role": "job"}):
        tags = run.data.tags
        task = tags.get(TAG + "task")
        if not task or (rows / f"{task}.json").exists():
            continue
        df = tracker.load_row(run.info.run_id)
        with atomic_path(rows / f"{task}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
        entry = {"job_id": tags[TAG + "job_id"], "run_name": run.info.run_name,
                 "tags": {k: v for k, v in tags.items() if k.startswith(TAG)},
                 "metrics": dict(run.data.metrics), "result": tracker.job_result(run.info.run_id)}
        write_text(rows / f"{task}.json", json.dumps(entry, indent=1, sort_keys=True))
        new += 1
    nll = settings.cache_dir / "nll"
    if nll.is_dir():
        (ledger / "nll").mkdir(parents=True, exist_ok=True)
        for f in nll.glob("weights-*.npz"):  # keyed by content; run-keyed files name this store's runs
            shutil.copyfile(f, ledger / "nll" / f.name)
    return new


def restore_cache(settings: Settings, ledger: Path) -> None:
    """Put the ledger's NLL cache files back (before `init_line`: the base model's NLLs are cached
    by the weights' content, so a line initialised from the same base reuses them)."""
    if (ledger / "nll").is_dir():
        dst = settings.cache_dir / "nll"
        dst.mkdir(parents=True, exist_ok=True)
        for f in (ledger / "nll").glob("*.npz"):
            if not (dst / f.name).exists():
                shutil.copyfile(f, dst / f.name)


def restore(settings: Settings, ledger: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Put the ledger's statistics rows back into the workspace (the line must exist: run after
    `init_line`). Returns {"imported": [...], "present": [...], "refused": {task: why}}."""
    from service.pipeline.inputs import job_context, resolve_task
    from service.pipeline.stats import stats_job_id
    from service.tracking.jobs import end_job, start_job
    from service.tracking.rows import log_row

    out: dict[str, Any] = {"imported": [], "present": [], "refused": {}}
    entries = sorted((ledger / "rows").glob("*.json")) if (ledger / "rows").is_dir() else []
    if not entries:
        return out
    ctx = job_context(settings)
    for path in entries:
        entry = json.loads(path.read_text())
        task_name = path.stem
        task = resolve_task(settings, task_name)
        want = stats_job_id(settings, task, ctx.parent.version, ctx.upstream.digest)
        if entry["job_id"] != want:
            out["refused"][task_name] = (f"measured as job {entry['job_id']}, this workspace's job "
                                         f"is {want} (other settings, base or upstream)")
            continue
        if ctx.tracker.find_job(want) is not None:
            out["present"].append(task_name)
            continue
        df = pd.read_parquet(path.with_suffix(".parquet"))
        if list(df["example_id"]) != list(ctx.upstream.ids):
            out["refused"][task_name] = "its example ids are not this upstream set's"
            continue
        tags = {k: v for k, v in entry["tags"].items()
                if k.split(".", 1)[1] not in ("role", "job_id", "kind", "inputs")}
        run = start_job(ctx.tracker, kind="stats", job_id=want, name=entry["run_name"],
                        tags={**tags, "ftctl.imported_from": "ledger"})
        log_row(run, df, ctx.upstream.texts, title=f"stats: {task_name}", views=False)
        run.log_metrics({k: v for k, v in entry["metrics"].items()})
        result = {k: v for k, v in entry["result"].items()
                  if k not in ("job_id", "run_id", "kind", "reused")}
        end_job(run, kind="stats", job_id=want, result=result)
        out["imported"].append(task_name)
    for task_name, why in out["refused"].items():
        say(f"ledger: row {task_name} not used: {why}")
    if out["imported"]:
        say(f"ledger: {len(out['imported'])} statistics row(s) restored from {ledger}")
    return out
