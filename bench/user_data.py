"""A user's files, made from the embedded corpora: what `bench/walkthrough.sh` and
`bench/gpu_check.sh` hand to `ftctl init` as "the user's data in the user's format".

    python -m bench.user_data DIR [--upstream 600] [--tasks translate_fra,wn_noun_food,...]

Writes DIR/upstream.jsonl (`text` + `source`: a seeded sample of the default world's upstream
chunks, standing in for "a sample of what the model learned before"), DIR/tasks/<name>.jsonl (one
file per task, `prompt`/`response` or `text` records, train and test together: ftctl splits them)
and DIR/new_task.jsonl (the task a release fine-tunes on).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

TASKS = ("translate_fra", "wn_noun_food", "py_io", "bible_law")
NEW_TASK = "translate_deu"


def dump(task: Any, path: Path) -> None:
    with path.open("w") as f:
        for e in [*task.train, *task.test]:
            rec = {"prompt": e.prompt, "response": e.response} if e.prompt else {"text": e.response}
            f.write(json.dumps(rec) + "\n")


def write_user_data(out: Path, n_upstream: int = 600, tasks: tuple[str, ...] = TASKS,
                    new_task: str = NEW_TASK) -> None:
    from training.world import load_world

    world = load_world("default")
    out.mkdir(parents=True, exist_ok=True)
    examples = random.Random(0).sample(world.upstream.examples, n_upstream)
    with (out / "upstream.jsonl").open("w") as f:
        for e in examples:
            f.write(json.dumps({"text": e.response, "source": e.source}) + "\n")
    (out / "tasks").mkdir(exist_ok=True)
    for name in tasks:
        dump(world.tasks[name], out / "tasks" / f"{name}.jsonl")
    dump(world.tasks[new_task], out / "new_task.jsonl")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--upstream", type=int, default=600, help="upstream examples to sample")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated world task names")
    a = p.parse_args()
    write_user_data(a.dir, a.upstream, tuple(t for t in a.tasks.split(",") if t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
