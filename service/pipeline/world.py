"""The embedded worlds as the CLI shows them: a world's inventory, its base model's report (built
once on request) and the regeneration of the world data from the Debian corpora packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import ServiceError
from service.pipeline.compute import step_messages
from service.settings import Settings

Say = Callable[[str], None]


def world_summary(name: str) -> dict[str, Any]:
    """A world's upstream sources (chunks each), tasks (family, sizes) and base-model spec."""
    from training.world import WORLDS, load_world

    w = load_world(name)
    return {
        "world": w.name,
        "worlds": sorted(WORLDS),
        "description": w.description,
        "data_digest": w.data_digest,
        "upstream_digest": w.upstream.digest,
        "upstream": [{"name": s, "chunks": n} for s, n in w.sources().items()],
        "tasks": [{"name": t.name, "family": t.family, "description": t.description,
                   "train": len(t.train), "test": len(t.test)} for t in w.tasks.values()],
        "base_model": {"kind": w.base_model_spec.kind, "key": w.base_model_spec.key()},
    }


def base_report(settings: Settings, name: str, *, build_missing: bool = False,
                say: Say = lambda _m: None) -> dict[str, Any]:
    """The world's base model in this workspace: its upstream NLL curve and convergence verdict;
    with `build_missing`, a scratch base not built yet is pre-trained first (minutes)."""
    from training.world import load_world
    from training.world.pretrain import base_model_dir, ensure_base_model
    from training.world.pretrain import base_report as report

    w = load_world(name)
    ws = settings.workspace
    if build_missing and w.base_model_spec.kind == "scratch" \
            and not (base_model_dir(w, ws) / "pretrain.json").is_file():
        say(f"pre-training the base model of world {w.name!r} into {ws} (once)")
        ensure_base_model(w, ws, progress=step_messages(say, "pre-training"))
    return report(w, ws)


def build_world(*, out: Path | None, austen_deb: Path | None, seed: int,
                say: Say = lambda _m: None) -> dict[str, Any]:
    """Regenerate the world data from the Debian corpora packages (deterministic for a seed)."""
    from training.world.builder import DATA_DIR, BuildConfig, build_world_data
    from training.world.corpora import DebianPaths
    from training.world.tasks import TaskBuildConfig

    if austen_deb is not None and not austen_deb.is_file():
        raise ServiceError(f"{austen_deb}: no such .deb. Fix: run `apt-get download "
                           "r-cran-janeaustenr` and pass the file it writes.")
    cfg = BuildConfig(seed=seed, tasks=TaskBuildConfig(seed=seed),
                      paths=DebianPaths(austen_deb=str(austen_deb) if austen_deb else None))
    manifest = build_world_data(cfg, out_dir=out or DATA_DIR, progress=say)
    return {"out": str(out or DATA_DIR), "digest": manifest["digest"], "pool": manifest["pool"],
            "tasks": len(manifest["tasks"]), "packages": manifest["packages"]}
