"""The world presets are fixed data: their upstream digests must not change silently (every
published matrix and every model line initialised on them names these digests)."""

from __future__ import annotations

import pytest

from training.world import load_world

# Measured with the committed data on 2026-12-03 (before user upstream sets existed).
DIGESTS = {"tiny": "7d2f273739368dcb", "default": "1d4b6fd035d59826", "study": "587f732e6128d172"}


@pytest.mark.parametrize("world", sorted(DIGESTS))
def test_world_upstream_digest_is_unchanged(world: str) -> None:
    assert load_world(world).upstream.digest == DIGESTS[world]
