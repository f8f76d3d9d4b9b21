"""Helpers of the broker tests: real Redis, real `ftctl worker` / `ftctl scheduler` processes.

Each test session uses its own Redis DB number and queue prefix, so parallel runs on the shared
Redis (127.0.0.1:6379) never consume each other's jobs; keys are removed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REDIS = ("127.0.0.1", 6379)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def require_redis() -> None:
    if not port_open(*REDIS):
        pytest.fail("Redis is not running on 127.0.0.1:6379; start it with `make services` "
                    "(infra/dev/ensure-services.sh)")


def ftctl_cmd() -> list[str]:
    """The installed `ftctl` console script of this venv: the tests start what users start."""
    exe = Path(sys.executable).with_name("ftctl")
    assert exe.exists(), f"{exe} is missing: install the package (`make venv`)"
    return [str(exe)]


@dataclass
class Cluster:
    """One isolated deployment: a workspace, a broker URL/prefix, and the processes started."""

    tmp: Path
    broker_url: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}-")
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cmd: list[str] = field(default_factory=ftctl_cmd)
    # False: a 1 s heartbeat and 6 s visibility timeout, so redelivery tests run in seconds;
    # True: the product's own defaults (what an operator gets), for the recovery tests.
    default_liveness: bool = False

    @property
    def workspace(self) -> Path:
        return self.tmp / "ws"

    def env(self, **over: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTCTL_")}
        env.update({
            "FTCTL_WORKSPACE": str(self.workspace), "FTCTL_BROKER_URL": self.broker_url,
            "FTCTL_QUEUE_PREFIX": self.prefix, "FTCTL_WORLD": "tiny",
            "FTCTL_MAX_ATTEMPTS": "3", "FTCTL_SCHEDULE_INBOX": "off",
            "FTCTL_SCHEDULE_STATS": "off", "FTCTL_SCHEDULE_REFIT": "off",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONPATH": str(ROOT),
        })
        if not self.default_liveness:
            env.update({"FTCTL_HEARTBEAT_SECONDS": "1", "FTCTL_VISIBILITY_TIMEOUT": "6"})
        env.update(self.extra_env)
        env.update(over)
        return env

    def settings(self) -> Any:
        from service.settings import load_settings

        return load_settings(env=self.env())

    def app(self) -> Any:
        from service.dist.app import make_app

        return make_app(self.settings(), env=self.env())

    def jobs(self) -> Any:
        from service.dist.client import RemoteJobs

        return RemoteJobs(self.settings(), self.app())

    def start(self, *args: str, name: str, ready: str = " ready.", timeout: float = 90,
              **env: str) -> subprocess.Popen[bytes]:
        """Start `ftctl <args>` and wait until its log shows `ready`."""
        log = self.tmp / f"{name}.log"
        fh = log.open("ab")
        proc = subprocess.Popen([*self.cmd, *args], env=self.env(**env), stdout=fh, stderr=fh,
                                cwd=self.tmp, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return proc

    def worker(self, queue: str, name: str = "", **env: str) -> subprocess.Popen[bytes]:
        args = ["worker", "--queue", queue, "--loglevel", "INFO"]
        args += ["--gpu", "0"] if queue == "gpu" else ["--concurrency", "1"]
        return self.start(*args, name=name or queue, **env)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Signal the process group we started (the worker and any pool children)."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def close(self) -> None:
        for p in self.procs:
            self.stop(p)
        try:
            import redis

            r = redis.Redis.from_url(self.broker_url)
            for pattern in (f"*{self.prefix}*",):
                keys = list(r.scan_iter(pattern, count=1000))
                if keys:
                    r.delete(*keys)
        except Exception:
            pass


def wait_for(pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def session_db() -> int:
    """A Redis DB number of our own (8-15) so that parallel sessions rarely share one."""
    return 8 + os.getpid() % 8


@contextmanager
def cluster(tmp: Path, broker_url: str | None = None, *, default_liveness: bool = False,
            **extra_env: str) -> Iterator[Cluster]:
    c = Cluster(tmp=tmp, broker_url=broker_url or f"redis://{REDIS[0]}:{REDIS[1]}/{session_db()}",
                extra_env=dict(extra_env), default_liveness=default_liveness)
    c.workspace.mkdir(parents=True, exist_ok=True)
    try:
        yield c
    finally:
        c.close()


@contextmanager
def private_redis(tmp: Path) -> Iterator[tuple[int, Callable[..., None]]]:
    """A redis-server of our own with AOF (appendfsync always): (port, restart)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: `make services` installs it (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "redis"
    data.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(data / "log")],
            start_new_session=True))
        wait_for(lambda: port_open("127.0.0.1", port), 10, "private redis-server")

    def restart(down: float = 0.0) -> None:
        p = procs[-1]
        p.send_signal(signal.SIGKILL)  # the hard way: only the AOF survives
        p.wait(10)
        time.sleep(down)  # how long clients find the broker gone
        start()

    start()
    try:
        yield port, restart
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
