"""`ftctl release chain DATA…`: a series of releases in order, each from the version the link
before it made — what scheduled continual fine-tuning does, in one command.

The chain starts from the @champion (or the template's parent version) and pins every link's
parent: link i + 1 starts from link i's version when link i passed its gate, else from link i's
own parent (a chain skips a failed link, it does not build on it); `stop_on_failure` ends the
series there instead. Each link is an ordinary idempotent release job whose id includes its
parent, so a rerun of the same series from the same start reuses every link that finished and
continues from the first that did not. Promotion is each link's own: a link that passes is
promoted when @champion is still its parent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from service.errors import ServiceError
from service.release.request import ReleaseRequest, release_new_task
from service.settings import Settings
from service.tracking.registry import Registry
from service.tracking.store import Tracker

RunOne = Callable[[Settings, ReleaseRequest], dict[str, Any]]


def release_chain(settings: Settings, tasks: Sequence[str], template: ReleaseRequest, *,
                  run_one: RunOne | None = None, stop_on_failure: bool = False,
                  follow_failed: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Release `tasks` one after another with `template`'s method, mode and seed; each from the
    current @champion (the template's task, name, job id and parent are per release).
    `run_one` runs one release to its result (default: in this process; the CLI passes the
    workers' runner for --remote). `follow_failed`: build the next link on a link whose gate
    failed too (an experiment measuring a chain of fine-tunes, not a release policy)."""
    if not tasks:
        raise ServiceError("a chain needs at least one task: ftctl release chain DATA [DATA …]")
    if template.job_id:
        raise ServiceError("a chain derives each release's job id itself; drop --job-id")
    if not template.register:
        raise ServiceError("a chain builds each link on the version the link before it "
                           "registered: chains need register=True")
    say = progress or (lambda _m: None)
    run = run_one or (lambda s, req: release_new_task(s, req, progress=say))
    start = template.parent_version or Registry(Tracker(settings)).champion().version
    parent = start
    links: list[dict[str, Any]] = []
    for i, task in enumerate(tasks, 1):
        say(f"chain {i}/{len(tasks)}: {task} from version {parent}")
        req = dataclasses.replace(template, task=task, parent_version=parent,
                                  name=template.name and f"{template.name}:{i}")
        result = run(settings, req)
        links.append(result)
        if (result["gate"]["passed"] or follow_failed) and result.get("version"):
            parent = int(result["version"])
        elif stop_on_failure:
            say(f"chain stopped at {task}: its gate failed ({'; '.join(result['gate']['reasons'])})")
            break
    return {"tasks": list(tasks), "start_version": start, "releases": links,
            "complete": len(links) == len(tasks),
            "promoted": sum(bool(r.get("champion")) for r in links),
            "summary": chain_summary(links)}


def chain_summary(links: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where the series left the chain: its last passing link's drift from the base and its
    earlier tasks' mean loss increase (Avalanche's backward transfer with the sign of a loss)."""
    passed = [r for r in links if r["gate"]["passed"] and r.get("version")]
    last = passed[-1] if passed else None
    ret = (last or {}).get("retention") or []
    return {"last_version": last and last.get("version"),
            "heldout_vs_base": last and last.get("heldout_vs_base"),
            "earlier_task_loss_increase_mean": (sum(r["increase"] for r in ret) / len(ret)) if ret else None,
            "gate_failures": [r["task"] for r in links if not r["gate"]["passed"]]}
