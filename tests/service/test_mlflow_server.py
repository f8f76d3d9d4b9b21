"""The tracking layer against a real `mlflow server` backed by PostgreSQL (what infra/ deploys):
job runs, recorded results, idempotent lookup, FAILED runs with their reason, per-example rows as
artifacts and the model registry with aliases — over HTTP, not the embedded SQLite store.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres); skipped with the reason if absent.
The server takes ~12 s to start (migrations).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.infra.workers import port_open

pytestmark = pytest.mark.integration
PG = ("127.0.0.1", 5432)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not port_open(*PG):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432: start it with `make services` "
                    "(infra/dev/ensure-services.sh); the MLflow-server test needs it as the backend store")
    import psycopg2  # in requirements.lock
    db = f"ftctl_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=PG[0], port=PG[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{db}"')
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (tmp / "server.log").open("wb")
    mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow_exe, "server", "--backend-store-uri", f"postgresql+psycopg2://postgres@{PG[0]}:{PG[1]}/{db}",
         "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


def test_tracking_and_registry_over_a_real_server(server: str, tmp_path: Path) -> None:
    from service.settings import load_settings
    from service.tracking.jobs import run_job
    from service.tracking.registry import CHAMPION, Registry
    from service.tracking.store import ROW_ARTIFACT, TAG, Tracker

    settings = load_settings(env={"FTCTL_WORKSPACE": str(tmp_path / "ws"), "FTCTL_TRACKING_URI": server,
                                  "FTCTL_MODEL_LINE": "server-test"})
    tracker = Tracker(settings)
    ids = [f"ex{i}" for i in range(1000)]
    calls = []

    def body(run: Any) -> dict[str, Any]:
        calls.append(run.run_id)
        run.log_params({"settings": settings.to_dict()})
        row = pd.DataFrame({"example_id": ids, "delta": np.linspace(-1, 1, 1000)})
        run.log_dataframe(row, ROW_ARTIFACT)
        run.log_metrics({"forgetting_mean": float(row["delta"].mean())})
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        run.log_artifacts(model, "model")
        return {"rows": len(row)}

    first = run_job(tracker, kind="stats", job_id="job-1", name="stats:x", tags={}, body=body)
    again = run_job(tracker, kind="stats", job_id="job-1", name="stats:x", tags={}, body=body)
    assert first["rows"] == 1000 and not first["reused"] and again["reused"] and len(calls) == 1
    run = tracker.find_job("job-1")
    assert run.info.run_id == first["run_id"] and tracker.job_result(run.info.run_id)["rows"] == 1000
    assert tracker.load_row(run.info.run_id)["example_id"].tolist() == ids

    with pytest.raises(RuntimeError, match="boom"):
        run_job(tracker, kind="stats", job_id="job-2", name="bad", tags={},
                body=lambda run: (_ for _ in ()).throw(RuntimeError("boom")))
    [failed] = tracker.find_runs({TAG + "job_id": "job-2"}, status="FAILED")
    assert failed.data.tags[TAG + "failure"] == "boom" and tracker.find_job("job-2") is None

    registry = Registry(tracker)
    v = registry.register(first["run_id"], "model", {TAG + "task": "x"})
    registry.set_alias(CHAMPION, v.version)
    assert registry.champion().version == v.version
    assert (registry.local_dir(registry.champion()) / "config.json").exists()
