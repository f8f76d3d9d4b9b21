"""A finished release into the registry: its model @candidate, and @champion only through its
gate — and only while the champion is still the release's parent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.release.gate import Gate
from service.release.history import log_line_view
from service.release.state import ReleaseState
from service.tracking.registry import CHAMPION, Registry
from service.tracking.store import TAG


def register_release(registry: Registry, state: ReleaseState, gate: Gate,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Register the release's model @candidate; promote it @champion if it passed its gate and
    the champion is still its parent (a release from an older champion must not undo a newer one)."""
    mine = [v for v in registry.versions(strict=True) if v.tags.get(TAG + "job_id") == state.job_id]
    version = next((v for v in mine if v.run_id == state.run_id), None)  # a redelivered finish
    if version is None:
        version = registry.register(state.run_id, "model", {
            TAG + "parent_version": state.parent_version, TAG + "task": state.task_name,
            TAG + "method": state.effective, TAG + "gate": gate.verdict,
            **chain_tags(gate),
            TAG + "digest": state.digest, TAG + "job_id": state.job_id})
        for old in mine:  # left by an attempt that failed after registering: never the answer
            registry.client.set_model_version_tag(registry.name, str(old.version),
                                                  TAG + "superseded_by", str(version.version))
    out: dict[str, Any] = {"version": version.version, "champion": False}
    why = "; ".join(gate.reasons) or "promotion not requested"
    if gate.passed and state.promote:
        current = registry.by_alias(CHAMPION)
        if current is None or current.version in (state.parent_version, version.version):
            registry.set_alias(CHAMPION, version.version)
            out["champion"] = True
        else:
            why = (f"@champion moved to version {current.version} while this release ran from "
                   f"{state.parent_version}; release the task again from the new champion")
            out["note"] = "; ".join(x for x in (state.note, f"not promoted: {why}") if x)
    say(f"registered version {version.version} @candidate"
        + (", promoted to @champion" if out["champion"] else f", not promoted ({why})"))
    # The lineage view (figures/model_line.png, chain/line.json) on the release's run, read from
    # the registry now that this version and its aliases are in it.
    log_line_view(registry.tracker.attach(state.run_id), registry, version.version, registry.tracker.settings)
    return out


def chain_tags(gate: Gate) -> dict[str, str]:
    """The version's place in its chain, on the version itself (what `release list` shows)."""
    tags = {TAG + "heldout_forgetting": f"{gate.heldout_forgetting:.4f}"}
    chain = gate.chain
    if chain is not None:
        if chain.heldout_vs_base is not None:
            tags[TAG + "heldout_vs_base"] = f"{chain.heldout_vs_base:.4f}"
        if chain.retention:
            tags[TAG + "earlier_loss_increase_max"] = f"{max(r.increase for r in chain.retention):.4f}"
    return tags
