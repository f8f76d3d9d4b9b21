"""MLflow edge of ftctl: experiments, runs, per-example rows as artifacts, figures, job lookup.

This module (with registry.py) is the only place that imports mlflow. It uses the explicit
``MlflowClient`` API with run ids — no global active run — so that worker processes and threads
never log into each other's runs.

Usage::

    tracker = Tracker(settings)                       # checks the store is reachable
    with tracker.run("stats:wn_noun_food", tags={...}) as run:
        run.log_params(config.to_dict())
        run.log_row(df)                               # parquet artifact + summary metrics + top-50 table
    # on an exception the run ends FAILED with tag ftctl.failure = the reason, then it re-raises.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from common.atomic import atomic_path
from service.errors import ServiceError
from service.settings import Settings

ROW_ARTIFACT = "forgetting/row.parquet"
RESULT_ARTIFACT = "result.json"
ROW_COLUMNS = ("example_id", "source", "nll_before", "nll_after", "delta", "replayed", "heldout")
TAG = "ftctl."  # prefix of every ftctl tag
# MLflow 3 infers an untagged experiment's kind and opened ftctl's in its GenAI view (traces);
# tagged, the UI opens it on its training runs.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params (dotted keys, values as short strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


class RunHandle:
    """Logging into one run by id."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if np.isfinite(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, fig, artifact_file)

    def log_table(self, df: pd.DataFrame, artifact_file: str) -> None:
        self.client.log_table(self.run_id, data=df, artifact_file=artifact_file)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_dataframe(self, df: pd.DataFrame, artifact_file: str) -> None:
        """Write a parquet artifact via a temp dir: a crash never leaves a half file in the store."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            df.to_parquet(path, index=False)
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent) or None)

    def log_input(self, df: pd.DataFrame, name: str, digest: str, context: str) -> None:
        """Record a dataset (upstream set, task data) as an MLflow dataset input with its digest."""
        ds = mlflow.data.from_pandas(df, name=name, digest=digest[:36])
        self.client.log_inputs(self.run_id, datasets=[_dataset_input(ds, context)])

    def log_result(self, result: Mapping[str, Any]) -> None:
        """The JSON result a rerun of the same job id returns without recomputing."""
        self.log_dict(dict(result), RESULT_ARTIFACT)


def _dataset_input(ds: Any, context: str) -> Any:
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return DatasetInput(dataset=ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


class Tracker:
    """The tracking store of one model line (an MLflow experiment of the same name)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = settings.resolved_tracking_uri
        if self.uri.startswith("sqlite:"):
            settings.workspace.mkdir(parents=True, exist_ok=True)
        elif self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        self.created = False  # this call created the experiment (see `discard_if_empty`)
        self.experiment_id = self._experiment(settings.model_line)

    def _experiment(self, name: str) -> str:
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                if exp.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:  # a line made before the tag
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
                return exp.experiment_id
            location = None
            if self.uri.startswith("sqlite:"):
                location = self.settings.artifact_root.as_uri()
            self.created = True
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT})
        except MlflowException as e:
            raise ServiceError(
                f"tracking store {self.uri} refused the request ({_first_line(e)}); "
                "check FTCTL_TRACKING_URI and that the MLflow server/database is up"
            ) from None

    def discard_if_empty(self) -> None:
        """Delete the experiment this tracker created if nothing was logged to it (a command that
        failed before its first run must not leave an empty model line in the UI)."""
        try:
            if self.created and not self.client.search_runs([self.experiment_id], max_results=1):
                self.client.delete_experiment(self.experiment_id)
        except MlflowException:
            pass  # the original error is what matters

    @contextmanager
    def run(
        self, name: str, *, tags: Mapping[str, Any] | None = None, parent_id: str | None = None
    ) -> Iterator[RunHandle]:
        """A run that ends FINISHED, or FAILED with the reason in tag ftctl.failure."""
        handle = self.start(name, tags=tags, parent_id=parent_id)
        with self.failing(handle.run_id):
            yield handle
        # Lightning's MLFlowLogger may already have finished a child run; finishing twice is fine.
        self.client.set_terminated(handle.run_id, "FINISHED")

    @contextmanager
    def failing(self, run_id: str) -> Iterator[None]:
        """Whatever escapes the block ends run `run_id` FAILED with the reason (and re-raises);
        a clean exit leaves it as it is (a release run spans several stages)."""
        try:
            yield
        except BaseException as e:
            self.fail(run_id, e)
            raise

    def start(self, name: str, *, tags: Mapping[str, Any] | None = None,
              parent_id: str | None = None) -> RunHandle:
        """A RUNNING run that outlives this call (a release spans several stage tasks); end it
        with `finish` or `fail`."""
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return RunHandle(self, run.info.run_id)

    def attach(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, error: BaseException | str) -> None:
        """End a run FAILED with the reason in tag ftctl.failure (never raises: the store itself
        may be what failed, and the original error is what matters)."""
        reason = error if isinstance(error, str) else (_first_line(error) or type(error).__name__)
        try:
            children = self.find_runs({"mlflow.parentRunId": run_id}, status="RUNNING")
            for run in [run_id, *(c.info.run_id for c in children)]:  # no stage run dangles
                self.client.set_tag(run, TAG + "failure", reason[:5000])
                self.client.set_terminated(run, "FAILED")
        except Exception:
            pass

    def fail_stale(self, filters: Mapping[str, str], reason: str) -> list[str]:
        """Mark RUNNING runs matching `filters` (and their RUNNING child runs) FAILED: runs whose
        process died. Returns their ids."""
        dead = []
        for run in self.find_runs(filters, status="RUNNING"):
            dead.append(run.info.run_id)
            dead += [r.info.run_id for r in
                     self.find_runs({"mlflow.parentRunId": run.info.run_id}, status="RUNNING")]
        for run_id in dead:
            self.fail(run_id, reason)
        return dead

    def find_runs(self, filters: Mapping[str, str], status: str | None = "FINISHED",
                  max_results: int = 10_000) -> list[Any]:
        clauses = [f"tags.`{k}` = '{v}'" for k, v in filters.items()]
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return list(self.client.search_runs(
            [self.experiment_id], " and ".join(clauses), max_results=max_results,
            order_by=["attributes.start_time ASC"],
        ))

    def get_run(self, run_id: str) -> Any:
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            raise ServiceError(f"no run {run_id!r} in {self.uri}; see `ftctl runs list`") from None

    def find_job(self, job_id: str) -> Any | None:
        """The finished run of this job id, if any (idempotency: a rerun returns its result)."""
        runs = self.find_runs({TAG + "job_id": job_id, TAG + "role": "job"})
        return runs[-1] if runs else None

    def job_result(self, run_id: str) -> dict[str, Any]:
        return self.load_dict(run_id, RESULT_ARTIFACT)

    def load_dict(self, run_id: str, artifact_file: str, missing_ok: bool = False) -> Any:
        """A JSON artifact of a run (what `RunHandle.log_dict` wrote); None when `missing_ok`
        and the run has no such artifact."""
        try:
            return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
        except (MlflowException, OSError):
            if missing_ok:
                return None
            raise

    def load_row(self, run_id: str) -> pd.DataFrame:
        """A logged forgetting row, cached locally by run id (rows are immutable once logged)."""
        cache = self.settings.cache_dir / "rows" / f"{run_id}.parquet"
        if cache.exists():
            return pd.read_parquet(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, ROW_ARTIFACT, tmp)
            df = pd.read_parquet(local)
        with atomic_path(cache) as tmp_cache:
            df.to_parquet(tmp_cache, index=False)
        return df


def _check_server(uri: str) -> None:
    """Fail in seconds with the fix, instead of MLflow's minutes of retries on a dead server."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
            if resp.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServiceError(
            f"tracking server {uri} cannot be reached ({getattr(e, 'reason', e)}); start it "
            "(`ftctl ui` for a local one, or infra/ for production) or fix FTCTL_TRACKING_URI"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def to_json(obj: Any) -> Any:
    """numpy-safe JSON conversion for results."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
