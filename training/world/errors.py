"""The world's error: a `training.errors.TrainingError` whose message names problem and fix."""

from __future__ import annotations

from training.errors import TrainingError


class WorldError(TrainingError):
    """Bad world name, missing corpora package, or corrupt committed data."""
