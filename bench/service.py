"""Benchmark of the distributed mode: what the broker costs, and how rows should be logged.

Usage::

    python -m bench.service --json              # everything (~25 min on 2 cores)
    python -m bench.service --skip-recovery     # without the recovery runs (~3-4 min)
    python -m bench.service --skip-release --skip-recovery   # ~1 min

Needs Redis on 127.0.0.1:6379 (a private DB number and queue prefix are used). Figures, all
measured in this run:

* dispatch overhead per stage: submit -> the worker starts the job (job record timestamp),
  for `ftctl.diagnose` jobs on a gpu (solo) worker, and the broker round trip of a trivial task
  on a cpu (prefork) worker; the in-process baseline is a direct function call (~0);
* throughput of trivial stage tasks (500 sent at once to one cpu worker);
* end-to-end overhead of a remote release over the in-process one for the same tiny job: the
  tiny world, a 2-layer model built from a config, `--steps` fine-tuning steps, no promotion;
  in-process = the first `release_new_task` call of a fresh process that has imported what a
  worker imports at start, remote = submit + wait on fresh gpu and cpu workers, under its own job
  id (both pay their heavy imports once, inside the timed job; the remote one finds the parent's
  NLL cached by the in-process one — under a second on the tiny world);
* logging a forgetting row as one parquet artifact vs one `log_metric` call per example, both
  timed at 2,000 examples in the same store, and the artifact alone at 1,000,000 examples;
* recovery with the default liveness settings (bench/recovery.py): seconds from a SIGKILLed gpu
  worker to its job training again on a new worker, and from a Redis restart (3 s down) to the
  job reporting progress again — p50 and max over `--kills` of each (default 5).

Goals (issue 6): < 1 s overhead per stage; the row artifact >= 100x faster than per-metric
logging and < 5 s. Issue 14: both recoveries under 3 minutes, every job finished exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


class Deployment:
    """A workspace + real worker processes on a private Redis DB / queue prefix."""

    def __init__(self, tmp: Path, db: int, broker_url: str = "", **env: str) -> None:
        self.tmp = tmp
        self.prefix = f"bench{uuid.uuid4().hex[:6]}-"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FTCTL_")} | {
            "FTCTL_WORKSPACE": str(tmp / "ws"),
            "FTCTL_BROKER_URL": broker_url or f"redis://127.0.0.1:6379/{db}",
            "FTCTL_QUEUE_PREFIX": self.prefix, "FTCTL_WORLD": "tiny", "FTCTL_SCHEDULE_INBOX": "off",
            "FTCTL_SCHEDULE_STATS": "off", "FTCTL_SCHEDULE_REFIT": "off", "PYTHONPATH": str(ROOT),
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GIT_PYTHON_REFRESH": "quiet"} | env
        self.procs: list[subprocess.Popen[bytes]] = []

    def ftctl(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from cli.app import app; from cli.worker import standalone; "
                "import sys; (standalone() if sys.argv[1] in ('worker','scheduler','jobs','inbox') "
                "else app)()", *args]

    def start_worker(self, queue: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{queue}-{len(self.procs)}.log"
        extra = ["--gpu", "0"] if queue == "gpu" else ["--concurrency", "1"]
        proc = subprocess.Popen(self.ftctl("worker", "--queue", queue, *extra), env=self.env,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        return proc

    def settings(self) -> Any:
        from service.settings import load_settings

        return load_settings(env=self.env)

    def init_line(self) -> None:
        """`ftctl init --world tiny --model DIR` with a 2-layer model built from a config."""
        model = self.tmp / "model"
        if not model.exists():
            subprocess.run([sys.executable, "-c", BUILD_MODEL, str(model)], env=self.env, check=True)
        run = subprocess.run(self.ftctl("init", "--world", "tiny", "--model", str(model), "--json"),
                             env=self.env, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"ftctl init failed: {run.stderr[-2000:]}")

    def jobs(self) -> Any:
        from service.dist.app import make_app
        from service.dist.client import RemoteJobs
        from service.settings import load_settings

        s = load_settings(env=self.env)
        return RemoteJobs(s, make_app(s, env=self.env))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
        import redis

        r = redis.Redis.from_url(self.env["FTCTL_BROKER_URL"])
        keys = list(r.scan_iter(f"*{self.prefix}*", count=1000))
        if keys:
            r.delete(*keys)


def recovery(tmp: Path, kills: int, steps: int) -> dict[str, Any]:
    """Worker kills and Redis restarts with the default liveness settings (bench/recovery.py)."""
    from bench.recovery import redis_restarts, worker_kills

    dep = Deployment(tmp / "kills", db=8 + (os.getpid() + 1) % 8, FTCTL_STEPS=str(steps))
    dep.tmp.mkdir(parents=True, exist_ok=True)
    try:
        dep.init_line()
        dep.start_worker("cpu")
        kill = worker_kills(dep, kills, steps)
    finally:
        dep.close()
    (tmp / "restarts").mkdir(parents=True, exist_ok=True)
    restart = redis_restarts(lambda url: Deployment(tmp / "restarts", db=0, broker_url=url,
                                                    FTCTL_STEPS=str(steps)), tmp / "restarts",
                             kills, steps)
    return {"worker_kill": kill, "redis_restart": restart}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def dispatch(dep: Deployment, n: int) -> dict[str, Any]:
    jobs = dep.jobs()
    jobs.wait(jobs.submit_diagnose(seconds=0, steps=1)["job_id"], timeout=120)  # warm the worker
    delays = []
    for _ in range(n):
        t0 = time.time()
        job = jobs.submit_diagnose(seconds=0, steps=1)
        jobs.wait(job["job_id"], timeout=120, poll=0.05)
        delays.append(jobs.store.get(job["job_id"])["started"] - t0)
    echo = jobs.app.tasks["ftctl.echo"]
    echo.apply_async((0,)).get(timeout=60)
    rtt = []
    for i in range(n * 5):
        t0 = time.perf_counter()
        echo.apply_async((i,)).get(timeout=60)
        rtt.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    results = [echo.apply_async((i,)) for i in range(500)]
    for r in results:
        r.get(timeout=120)
    throughput = 500 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(10_000):
        echo.run(i)  # the in-process baseline: the same function, no broker
    inproc = (time.perf_counter() - t0) / 10_000
    return {"submit_to_start_s": {"p50": statistics.median(delays), "p95": pct(delays, 0.95), "n": n},
            "echo_round_trip_s": {"p50": statistics.median(rtt), "p95": pct(rtt, 0.95), "n": len(rtt)},
            "in_process_call_s": inproc, "trivial_tasks_per_s": throughput}


def release(dep: Deployment, steps: int) -> dict[str, Any]:
    dep.init_line()
    # In-process: a fresh process that has imported what a worker imports at start, timing the
    # first release call (each side pays its heavy imports once, inside the timed job).
    local = subprocess.run([sys.executable, "-c", IN_PROCESS, str(steps)], env=dep.env,
                           capture_output=True, text=True)
    if local.returncode:
        raise SystemExit(f"in-process release failed: {local.stderr[-2000:]}")
    mine = json.loads(local.stdout.strip().splitlines()[-1])
    dep.start_worker("gpu")
    dep.start_worker("cpu")
    from service.release.request import ReleaseRequest

    jobs = dep.jobs()
    t0 = time.perf_counter()
    # Its own job id: with the derived one the workers would return the in-process job's result.
    job = jobs.submit_release(ReleaseRequest(task="bible_gospels", method="random", steps=steps,
                                             promote=False, job_id=mine["job_id"] + "-remote"))
    result = jobs.wait(job["job_id"], timeout=900, poll=0.2)
    remote = time.perf_counter() - t0
    if result.get("reused"):
        raise SystemExit("the remote release returned a recorded result: the comparison is void")
    return {"steps": steps, "in_process_s": mine["seconds"], "remote_s": remote,
            "overhead_s": remote - mine["seconds"], "remote_version": result.get("version")}


IN_PROCESS = """
import json, sys, time
import service.dist.app, service.release.request  # what a worker has imported before its first job
from service.release.request import ReleaseRequest, release_new_task
from service.settings import load_settings
t0 = time.perf_counter()
out = release_new_task(load_settings(), ReleaseRequest(task="bible_gospels", method="random",
                                                       steps=int(sys.argv[1]), promote=False))
print(json.dumps({"seconds": time.perf_counter() - t0, "job_id": out["job_id"]}))
"""


BUILD_MODEL = """
import sys
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast
from training.model import build_model, save_model
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300,
                        min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False)
tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>")
cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": True,
       "vocab_size": len(tok), "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
save_model(build_model(cfg, seed=0), tok, sys.argv[1])
"""


def logging_cost(tmp: Path, n: int = 1_000_000, calls: int = 2_000) -> dict[str, Any]:
    """A row logged as one parquet artifact vs one `log_metric` per example, both measured at
    `calls` examples (same rows, same store), plus the artifact alone at `n` examples."""
    import numpy as np
    import pandas as pd

    from service.settings import load_settings
    from service.tracking.store import ROW_ARTIFACT, Tracker

    tracker = Tracker(load_settings(env={"FTCTL_WORKSPACE": str(tmp / "log-ws")}))
    rng = np.random.default_rng(0)
    before, after = rng.gamma(2, 1, n), rng.gamma(2, 1, n)
    row = pd.DataFrame({"example_id": [f"ex{i}" for i in range(n)], "source": "bench",
                        "nll_before": before, "nll_after": after, "delta": after - before,
                        "replayed": False, "heldout": False})

    def artifact_seconds(df: pd.DataFrame, name: str) -> float:
        with tracker.run(name) as run:
            t0 = time.perf_counter()
            run.log_dataframe(df, ROW_ARTIFACT)
            return time.perf_counter() - t0

    small = artifact_seconds(row.iloc[:calls], "row-artifact-small")
    big = artifact_seconds(row, "row-artifact")
    with tracker.run("per-metric") as run:
        t0 = time.perf_counter()
        for i in range(calls):
            tracker.client.log_metric(run.run_id, f"delta/ex{i}", float(row["delta"].iat[i]))
        per_metric = time.perf_counter() - t0
    return {"examples": n, "artifact_s": big, "compared_at_examples": calls,
            "artifact_small_s": small, "per_metric_s": per_metric,
            "per_metric_call_s": per_metric / calls, "speedup": per_metric / small}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--skip-release", action="store_true", help="skip the tiny release comparison")
    ap.add_argument("--n", type=int, default=20, help="dispatch samples")
    ap.add_argument("--steps", type=int, default=5, help="fine-tuning steps of the tiny release")
    ap.add_argument("--skip-recovery", action="store_true",
                    help="skip the worker-kill and Redis-restart recovery runs (~20 min)")
    ap.add_argument("--kills", type=int, default=5, help="worker kills and Redis restarts each")
    ap.add_argument("--recovery-steps", type=int, default=600,
                    help="fine-tuning steps of each statistics job killed (~1 min on 2 cores)")
    args = ap.parse_args()
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["logging"] = logging_cost(tmp)
        dep = Deployment(tmp, db=8 + os.getpid() % 8)
        try:
            dep.start_worker("gpu")
            dep.start_worker("cpu")
            out["dispatch"] = dispatch(dep, args.n)
            if not args.skip_release:
                for p in dep.procs:  # fresh workers for the release: both sides pay imports once
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(30)
                dep.procs.clear()
                out["release"] = release(dep, args.steps)
        finally:
            dep.close()
        if not args.skip_recovery:
            out["recovery"] = recovery(tmp, args.kills, args.recovery_steps)
    d, lg = out["dispatch"], out["logging"]
    out["goals"] = {"stage_overhead_lt_1s": d["submit_to_start_s"]["p95"] < 1.0,
                    "row_artifact_ge_100x": lg["speedup"] >= 100, "row_artifact_lt_5s": lg["artifact_s"] < 5}
    if "recovery" in out:
        rec = out["recovery"]
        out["goals"] |= {"worker_kill_recovery_lt_3min": rec["worker_kill"]["recovery_s"]["max"] < 180,
                         "redis_restart_recovery_lt_3min": rec["redis_restart"]["recovery_s"]["max"] < 180,
                         "redis_restart_exactly_once": all(rec["redis_restart"]["finished_exactly_once"])}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dispatch submit->start p50 {d['submit_to_start_s']['p50'] * 1000:.0f} ms, "
          f"p95 {d['submit_to_start_s']['p95'] * 1000:.0f} ms (in-process call "
          f"{d['in_process_call_s'] * 1e6:.1f} µs)")
    print(f"echo round trip p50 {d['echo_round_trip_s']['p50'] * 1000:.1f} ms; "
          f"{d['trivial_tasks_per_s']:.0f} trivial tasks/s")
    if "release" in out:
        r = out["release"]
        print(f"tiny release: in-process {r['in_process_s']:.1f} s, remote {r['remote_s']:.1f} s, "
              f"overhead {r['overhead_s']:+.1f} s")
    if "recovery" in out:
        for name, r in out["recovery"].items():
            print(f"recovery after a {name.replace('_', ' ')} (n={r['recovery_s']['n']}): "
                  f"p50 {r['recovery_s']['p50']:.0f} s, max {r['recovery_s']['max']:.0f} s")
    print(f"{lg['compared_at_examples']:,}-example row: artifact {lg['artifact_small_s']:.3f} s vs "
          f"per-example log_metric {lg['per_metric_s']:.1f} s: {lg['speedup']:.0f}x; "
          f"{lg['examples']:,}-example row as an artifact: {lg['artifact_s']:.2f} s")


if __name__ == "__main__":
    main()
