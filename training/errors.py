"""The one user-facing error of the training package.

Every bad input to `training` (unreadable task data, a model directory that is not one, a config
value out of range, a held-out id in a replay schedule...) raises `TrainingError` with a message
that names the problem, where it is (file, row, field, example id) *and* the fix. The CLI turns it
into a one-line message and exit code 1.
"""

from __future__ import annotations


class TrainingError(ValueError):
    """Bad input to training: data, model directory, configuration or replay schedule."""
