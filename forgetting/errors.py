"""The one user-facing error of the forgetting package.

Every bad input to `forgetting` raises `ForgettingError` with a message that names the problem
*and* the fix; the CLI turns it into a one-line message and exit code 1.
"""

from __future__ import annotations


class ForgettingError(ValueError):
    """Bad input to the forgetting core (shapes, NaN/inf, digests, unknown methods...)."""
