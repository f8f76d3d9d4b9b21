"""The one user-facing error of service/: a sentence naming the problem and the fix."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A failure the user can act on (bad settings, unknown task, unreachable tracking store...).

    The CLI prints ``str(err)`` as one line and exits 1; no traceback unless ``--debug``.
    """


class JobStopped(ServiceError):
    """The job was stopped from outside its work (cancelled, out of time, handed to another
    delivery): it ends here, whatever loop it is in — never caught as one task's failure."""
