"""How long a job is gone after the failures operators meet, with the default liveness settings
(a 10 s heartbeat, a 60 s visibility timeout): part of `python -m bench.service --json`.

* worker kill: a statistics job on the tiny world is fine-tuning (a 2-layer model, `steps`
  steps); at 40% of its steps its gpu worker is SIGKILLed and a new gpu worker started. Recovery
  = seconds from the kill until the job trains again on the new worker (its record shows the
  second delivery reporting progress). Also recorded: the step it resumed from (its checkpoint).
* Redis restart: a private redis-server with AOF (appendfsync always) is SIGKILLed at 30% of a
  fine-tune, left down 3 s and restarted. Recovery = seconds from the restart until the job
  reports a newer step than before the outage; and whether it then finished exactly once (one
  FINISHED run, never redelivered).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TASKS = ("py_io", "translate_fra", "wn_noun_food", "bible_law", "translate_deu", "bible_history",
         "wn_verb_motion", "fortune_people", "py_os", "translate_spa")


def _until(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.recovery: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return got


def _step(jobs: Any, job_id: str) -> int:
    return int((jobs.store.get(job_id) or {}).get("progress", {}).get("step") or 0)


def _summary(xs: list[float]) -> dict[str, Any]:
    xs = sorted(xs)
    return {"n": len(xs), "p50": xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1]
                                                                        + xs[len(xs) // 2]) / 2,
            "max": xs[-1], "all": [round(x, 1) for x in xs]}


def _tasks(dep: Any, n: int) -> list[str]:
    from training.world import load_world

    names = [t for t in TASKS if t in load_world("tiny").tasks]
    if len(names) < n:
        raise SystemExit(f"bench.recovery: {n} kills need {n} tasks; the tiny world has {names}")
    return names[:n]


def worker_kills(dep: Any, n: int, steps: int) -> dict[str, Any]:
    """n statistics jobs, each with its gpu worker SIGKILLed at 40% of its fine-tune."""
    jobs = dep.jobs()
    gpu = dep.start_worker("gpu")
    recovered, resumed = [], []
    for task in _tasks(dep, n):
        job_id = jobs.submit_stats(task)["job_id"]
        _until(lambda j=job_id: _step(jobs, j) >= 0.4 * steps, 600, f"{task} at 40%")
        gpu.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        gpu.wait(30)
        gpu = dep.start_worker("gpu")
        _until(lambda j=job_id: (r := jobs.store.get(j) or {}).get("attempts") == 2
               and r.get("state") == "PROGRESS", 900, f"{task} to train again")
        recovered.append(time.monotonic() - killed)
        resumed.append(jobs.wait(job_id, timeout=900)["resumed_from"])
    return {"steps": steps, "recovery_s": _summary(recovered), "resumed_from_step": resumed}


@contextmanager
def private_redis(tmp: Path) -> Iterator[tuple[int, Callable[[float], float]]]:
    """A redis-server of our own with AOF: (port, restart(down) -> monotonic time it is back)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("bench.recovery: redis-server is not installed (`make services`)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "redis"
    data.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def up() -> float:
        procs.append(subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(data / "log")],
            start_new_session=True))

        def accepting() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        _until(accepting, 30, "redis-server", poll=0.05)
        return time.monotonic()

    def restart(down: float) -> float:
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait(10)
        time.sleep(down)
        return up()

    up()
    try:
        yield port, restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def redis_restarts(make_deployment: Callable[[str], Any], tmp: Path, n: int,
                   steps: int) -> dict[str, Any]:
    """n statistics jobs, each with the broker SIGKILLed at 30% of its fine-tune, down 3 s."""
    from service.tracking.store import TAG, Tracker

    recovered, once = [], []
    with private_redis(tmp) as (port, restart):
        dep = make_deployment(f"redis://127.0.0.1:{port}/0")
        try:
            dep.init_line()
            dep.start_worker("gpu")
            dep.start_worker("cpu")
            for task in _tasks(dep, n):
                jobs = dep.jobs()
                job_id = jobs.submit_stats(task)["job_id"]
                _until(lambda js=jobs, j=job_id: _step(js, j) >= 0.3 * steps, 600, f"{task} at 30%")
                before = _step(jobs, job_id)
                back = restart(3.0)
                jobs = dep.jobs()  # a fresh connection to the restarted broker
                _until(lambda js=jobs, j=job_id, b=before: _step(js, j) > b, 600,
                       f"{task} after the restart")
                recovered.append(time.monotonic() - back)
                jobs.wait(job_id, timeout=900)
                runs = Tracker(dep.settings()).find_runs({TAG + "job_id": job_id}, status=None)
                once.append([r.info.status for r in runs] == ["FINISHED"]
                            and jobs.store.get(job_id)["attempts"] == 1)
        finally:
            dep.close()
    return {"steps": steps, "down_s": 3.0, "recovery_s": _summary(recovered),
            "finished_exactly_once": once}
