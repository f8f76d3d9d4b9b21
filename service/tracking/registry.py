"""The model registry of a model line: versions with lineage tags and the aliases
@candidate (registered, not yet gated) and @champion (what the next release starts from).

Stages are deprecated in MLflow; ftctl uses aliases only.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from common.atomic import atomic_path
from service.errors import ServiceError
from service.tracking.store import Tracker

CHAMPION = "champion"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    source: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "run_id": self.run_id,
            "aliases": list(self.aliases), "tags": self.tags, "source": self.source,
        }


class Registry:
    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.name = tracker.settings.model_line

    def _ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(
                self.name, description="ftctl model line: releases with forgetting gates"
            )

    def register(self, run_id: str, artifact_path: str, tags: dict[str, str]) -> Version:
        """Register the run's model directory as a new version, aliased @candidate."""
        self._ensure_model()
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        mv = self.client.create_model_version(
            self.name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}
        )
        self.client.set_registered_model_alias(self.name, CANDIDATE, mv.version)
        return self.get(int(mv.version))

    def get(self, version: int) -> Version:
        try:
            mv = self.client.get_model_version(self.name, str(version))
        except MlflowException:
            raise ServiceError(
                f"model line {self.name!r} has no version {version}; see `ftctl release list`"
            ) from None
        return Version(self.name, int(mv.version), mv.source, mv.run_id or "", dict(mv.tags),
                       tuple(mv.aliases))

    def by_alias(self, alias: str) -> Version | None:
        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None
        return self.get(int(mv.version))

    def champion(self) -> Version:
        v = self.by_alias(CHAMPION)
        if v is None:
            raise ServiceError(
                f"model line {self.name!r} has no @champion yet; run `ftctl init` first"
            )
        return v

    def set_alias(self, alias: str, version: int) -> Version:
        self.get(version)
        self.client.set_registered_model_alias(self.name, alias, str(version))
        return self.get(version)

    def versions(self, strict: bool = False) -> list[Version]:
        """The line's versions, oldest first. strict: a store error raises (a caller deciding
        whether to register must not mistake an outage for "no versions")."""
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            if strict:
                raise
            return []
        return sorted((self.get(int(mv.version)) for mv in found), key=lambda v: v.version)

    def local_dir(self, version: Version) -> Path:
        """The version's model directory on this machine (downloaded and cached if remote)."""
        cache = self.tracker.settings.cache_dir / "models" / f"{self.name}-v{version.version}"
        if version.source.startswith("file://") or version.source.startswith("/"):
            path = Path(version.source.removeprefix("file://"))
            if path.exists():
                return path
        if cache.exists():
            return cache
        # Each process downloads into its own folder; the first to finish publishes the cache.
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as dl:
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=dl)
            except (MlflowException, OSError) as e:
                raise ServiceError(
                    f"the model files of {self.name} version {version.version} cannot be read from "
                    f"{version.source} ({str(e).splitlines()[0][:200]}); restore the artifact store, "
                    f"or `ftctl release rollback` to a version whose files exist") from None
            with atomic_path(cache, keep_existing=True) as tmp:
                (Path(dl) / Path(version.source).name).rename(tmp)
        return cache
