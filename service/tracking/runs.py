"""The model line's runs as `ftctl runs` and `ftctl ui` show them."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

from service.errors import ServiceError
from service.settings import Settings
from service.tracking.store import TAG, Tracker

KINDS = ("init", "stats", "release", "measure", "refit", "analysis", "diagnose")
STATUSES = ("FINISHED", "FAILED", "RUNNING", "KILLED")


@dataclass(frozen=True)
class JobRun:
    run_id: str
    name: str
    status: str
    kind: str | None
    task: str | None
    job_id: str | None
    failure: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_jobs(settings: Settings, kind: str | None = None, status: str | None = None) -> list[JobRun]:
    """The job runs of the model line (not their stage runs), oldest first."""
    if kind is not None and kind not in KINDS:
        raise ServiceError(f"unknown job kind {kind!r}; choose one of {', '.join(KINDS)}")
    if status is not None and status.upper() not in STATUSES:
        raise ServiceError(f"unknown run status {status!r}; choose one of {', '.join(STATUSES)}")
    filters = {TAG + "role": "job"} | ({TAG + "kind": kind} if kind else {})
    runs = Tracker(settings).find_runs(filters, status=status.upper() if status else None)
    return [JobRun(run_id=r.info.run_id, name=r.info.run_name, status=r.info.status,
                   kind=r.data.tags.get(TAG + "kind"), task=r.data.tags.get(TAG + "task"),
                   job_id=r.data.tags.get(TAG + "job_id"), failure=r.data.tags.get(TAG + "failure"))
            for r in runs]


def show_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """One run: status, ftctl tags, params and metrics."""
    r = Tracker(settings).get_run(run_id)
    return {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
            "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
            "params": r.data.params, "metrics": r.data.metrics}


def ui_command(settings: Settings, host: str, port: int) -> list[str] | None:
    """The `mlflow ui` command serving the workspace's store; None when the store is a server
    already (its own UI is the one to open)."""
    uri = settings.resolved_tracking_uri
    if uri.startswith(("http://", "https://")):
        return None
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--default-artifact-root", settings.artifact_root.as_uri(), "--host", host,
            "--port", str(port)]


def experiment_link(base_url: str, experiment_id: str) -> str:
    """The UI address of the line's experiment, opened on its training runs: MLflow 3's UI has a
    global GenAI / "Model training" switch (GenAI by default) that, while shown, decides an
    experiment's view over its `mlflow.experimentKind` tag; the query parameter sets it."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def line_link(settings: Settings, base_url: str) -> str | None:
    """`experiment_link` of the settings' model line, or None while the line does not exist
    (looked up without creating it)."""
    from mlflow.tracking import MlflowClient

    try:
        exp = MlflowClient(settings.resolved_tracking_uri).get_experiment_by_name(settings.model_line)
    except Exception:  # a store that cannot answer: no link, the UI still starts
        return None
    return experiment_link(base_url, exp.experiment_id) if exp is not None else None
