"""Settings from the root options, env vars and the workspace config (see service.settings)."""

from __future__ import annotations

from typing import Any

ROOT_OVERRIDES: dict[str, Any] = {}


def settings(**overrides: Any) -> Any:
    from service.settings import load_settings

    return load_settings(overrides={**ROOT_OVERRIDES, **overrides})
