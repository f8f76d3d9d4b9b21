"""The embedded world: real offline corpora, 52 tasks, a BPE tokenizer and base models.

Usage::

    from training.world import load_world
    w = load_world("default")                      # "tiny" for tests, "smollm2" for a real LM
    from training.world.pretrain import ensure_base_model
    base_dir = ensure_base_model(w, ".ftctl/worlds")   # release 0, built once and cached

The data under `training/world/data/` is committed (see its LICENSES.md) and regenerated from
Debian packages by `ftctl world build` (training.world.builder).
"""

from training.world.errors import WorldError
from training.world.registry import WORLDS, BaseModelSpec, TaskInfo, World, load_world

__all__ = ["WORLDS", "BaseModelSpec", "TaskInfo", "World", "WorldError", "load_world"]
