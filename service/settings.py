"""One settings object for the whole service: defaults < TOML file < FTCTL_* env vars < CLI flags.

Usage::

    s = load_settings()                                  # ./.ftctl/ftctl.toml if present, env vars
    s = load_settings(overrides={"method": "knn"})      # what the CLI passes for its flags
    s.tracking_uri                                       # sqlite:///<workspace>/mlflow.db unless set

Environment: FTCTL_WORKSPACE, FTCTL_TRACKING_URI, FTCTL_BROKER_URL, FTCTL_MODEL_LINE, FTCTL_WORLD,
FTCTL_METHOD, FTCTL_K, FTCTL_REPLAY_RATIO, FTCTL_TEMPERATURE, FTCTL_HELDOUT, ... (every field, upper
case). FTCTL_CONFIG points at a TOML file; otherwise <workspace>/ftctl.toml is read when it exists.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.atomic import write_text
from forgetting.methods import COMPLETION_METHODS, RELEASE_METHODS, method_help
from service.errors import ServiceError


@dataclass(frozen=True)
class Settings:
    """Everything a job needs to know besides its own arguments. Logged with every run."""

    workspace: Path = Path(".ftctl")
    """Directory for the local tracking store, artifacts, model cache and the config file."""
    tracking_uri: str = ""
    """MLflow tracking URI. Empty: SQLite in the workspace (the embedded default)."""
    broker_url: str = ""
    """Celery broker (redis://...). Empty: every job runs in-process."""
    model_line: str = "ftctl-default"
    """Registered-model name and MLflow experiment of this model line."""
    world: str = "default"
    """Embedded world (default, study, tiny or smollm2): the base model, upstream set, tasks and
    fine-tuning recipe of a preset line; `upstream` and `tasks` replace its data with yours."""
    upstream: str = ""
    """Your upstream set: JSONL/JSON/CSV/parquet file(s), a directory of them or a save_to_disk
    directory of `text` or `prompt`/`response` records; empty = the world's."""
    tasks: str = ""
    """Your task catalogue: a directory with one task file (or folder) per task and an optional
    tasks.toml; empty = the world's tasks. A task not in it can still be released by path."""
    chat_template: str = "auto"
    """Instruction data (`prompt`/`response`) through the tokenizer's chat template: auto (when
    the tokenizer has one, as the study did) or none (prompt and response concatenated)."""
    max_length: int = 0
    """Tokens per example for training and measuring (at most the model's context); longer
    upstream records and task examples keep their last max_length tokens. 0 = the world's recipe
    (256), else 1024."""
    long_records: str = "truncate"
    """Records longer than max_length: truncate (counted and shown by `ftctl init`) or refuse."""
    trust_remote_code: bool = False
    """Let transformers run the model directory's own modelling code (off: it runs arbitrary code)."""
    method: str = "mf"
    """Default completion method for releases (see `ftctl forgetting evaluate`)."""
    k: int = 30
    """Probe examples measured per new task before completing its row."""
    replay_ratio: float = 1 / 32
    """Replay budget: int(|task train| * ratio) + 1 upstream examples."""
    temperature: float = 0.1
    """Replay sampling temperature: p ∝ softmax(predicted forgetting / T)."""
    heldout: float = 0.0
    """Held-out upstream examples, never replayed: a count (>= 1), a fraction (< 1), or 0 = the
    study's rule (10,000 examples when the set has >= 40,000, else a quarter of it)."""
    heldout_seed: int = 0
    """Seed of the held-out split (a hash of each example id): fixed per model line, so that every
    job of the line is scored on the same never-replayed examples whatever its own seed."""
    self_replay_tokens: int = 128
    """Self-generated replay (--replay-source self|mix): tokens sampled per sequence."""
    earlier_replay_share: float = 0.5
    """Share of the replay budget given to train examples of the tasks the chain's earlier releases
    learned (release.plan; 0 = upstream only): 0.5 forgot the earlier tasks 12% less than MF's
    upstream-only replay at the same budget, with no more upstream drift (docs/results/chain/)."""
    earlier_replay_candidates: int = 256
    """Train examples each release logs as later releases' earlier-task replay candidates."""
    warmup_fraction: float = 0.1
    """Online mode: share of the fine-tuning steps before the probes are measured."""
    steps: int = 0
    """Fine-tuning steps per task (before the (1 + r) replay extension); 0 = the world's default."""
    batch_size: int = 0
    """Fine-tuning batch size; 0 = the world's default."""
    lr: float = 0.0
    """Fine-tuning learning rate; 0 = the world's default (1e-4 full FT on the default world)."""
    lora: bool | None = None
    """LoRA (peft) instead of full fine-tuning; unset = the world's default."""
    seed: int = 0
    gate_max_heldout_forgetting: float = 0.5
    """Gate: mean held-out ΔNLL (nats) of a candidate must not exceed this."""
    gate_require_task_gain: bool = True
    """Gate: the candidate's task test loss must be below its parent's."""
    gate_max_relative_to_random: float = 0.0
    """Gate (0 = off): held-out forgetting must not exceed this multiple of a random-replay
    release of the same task from the same parent, measured earlier (e.g. 1.0: no worse)."""
    gate_max_cumulative_forgetting: float = 1.0
    """Gate (0 = off): mean held-out ΔNLL (nats) against the line's base (release 0) — the drift
    a chain of releases adds up to, each within its own budget against its parent."""
    gate_max_earlier_task_loss_increase: float = 0.5
    """Gate (0 = off): no task an earlier release of the chain learned may lose more than this
    many nats of test loss against its loss just after its own release."""
    workers: int = 2
    """Parallel processes for statistics jobs in-process (one torch thread each)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_method(self) -> str:
        """The method when it is a completion method (not a replay control), else mf: what the
        scheduled refit and `ftctl forgetting predict` fit."""
        return self.method if self.method in COMPLETION_METHODS else "mf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace", Path(self.workspace).expanduser())
        # NaN passes every comparison below by failing it, and inf is no budget: refuse both first.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ServiceError(f"{f.name} must be a finite number, got {value}")
        if self.method not in RELEASE_METHODS:
            raise ServiceError(f"unknown method {self.method!r}; choose {method_help()}")
        if self.chat_template not in ("auto", "none"):
            raise ServiceError(f"chat_template must be auto or none, got {self.chat_template!r}")
        if self.long_records not in ("truncate", "refuse"):
            raise ServiceError(f"long_records must be truncate or refuse, got {self.long_records!r}")
        if self.max_length < 0 or self.max_length == 1:
            raise ServiceError(f"max_length must be >= 2 tokens (0 = the line's default), got {self.max_length}")
        if not 0 < self.replay_ratio <= 1:
            raise ServiceError(f"replay_ratio must be in (0, 1], got {self.replay_ratio}; e.g. 0.03125")
        if self.gate_max_heldout_forgetting <= 0:
            raise ServiceError(f"gate_max_heldout_forgetting must be > 0 nats, got "
                               f"{self.gate_max_heldout_forgetting}; the default is 0.5")
        if self.temperature <= 0:
            raise ServiceError(f"temperature must be > 0, got {self.temperature}; the study uses 0.1")
        if self.k < 1:
            raise ServiceError(f"k must be >= 1, got {self.k}; the study uses 30 probes")
        if not 0 < self.warmup_fraction < 1:
            raise ServiceError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
        for name in ("steps", "batch_size", "lr"):
            if getattr(self, name) < 0:
                raise ServiceError(f"{name} must be >= 0 (0 = the world's default), got {getattr(self, name)}")
        if not 0 <= self.earlier_replay_share <= 1:
            raise ServiceError(f"earlier_replay_share must be in [0, 1], got {self.earlier_replay_share}")
        if self.earlier_replay_candidates < 0:
            raise ServiceError(f"earlier_replay_candidates must be >= 0, got {self.earlier_replay_candidates}")
        if self.self_replay_tokens < 1:
            raise ServiceError(f"self_replay_tokens must be >= 1, got {self.self_replay_tokens}")
        if self.workers < 1:
            raise ServiceError(f"workers must be >= 1, got {self.workers}")
        for name in ("gate_max_cumulative_forgetting", "gate_max_earlier_task_loss_increase"):
            if getattr(self, name) < 0:
                raise ServiceError(f"{name} must be >= 0 nats (0 = off), got {getattr(self, name)}")
        if self.gate_max_relative_to_random < 0:
            raise ServiceError(f"gate_max_relative_to_random must be >= 0 (0 = off), got "
                               f"{self.gate_max_relative_to_random}")
        if self.heldout < 0:
            raise ServiceError(f"heldout must be a count >= 1, a fraction in (0, 1) or 0 (auto), "
                               f"got {self.heldout}")

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.workspace / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.workspace / "artifacts").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.workspace / "cache").resolve()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["workspace"] = str(self.workspace)
        return d

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


_PARSERS: dict[str, Any] = {"int": int, "float": float, "str": str, "Path": Path, "bool": _parse_bool,
                            "bool | None": _parse_bool}


def _coerce(name: str, raw: Any, typ: str) -> Any:
    parse = _PARSERS[typ]
    try:
        return parse(raw)
    except (TypeError, ValueError):
        raise ServiceError(f"setting {name} expects a {typ} value, got {raw!r}") from None


def load_settings(
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge defaults, the TOML file, FTCTL_* variables and explicit overrides (None = unset)."""
    env = dict(os.environ if env is None else env)
    known = {f.name: f for f in fields(Settings) if f.name != "extra"}
    values: dict[str, Any] = {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    workspace = Path(overrides.get("workspace") or env.get("FTCTL_WORKSPACE") or ".ftctl")
    path = config_file or (Path(env["FTCTL_CONFIG"]) if env.get("FTCTL_CONFIG") else None)
    path = path or workspace / "ftctl.toml"
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ServiceError(f"config file {path} is not valid TOML ({e}); fix or delete it") from None
        section = dict(data.get("ftctl", data))
        dist = section.pop("dist", None)  # [ftctl.dist]: the distributed mode's knobs
        if dist is not None:
            if not isinstance(dist, dict):
                raise ServiceError(f"{path}: [ftctl.dist] must be a table of settings")
            values["extra"] = dict(dist)
        for k, v in section.items():
            if k not in known:
                raise ServiceError(
                    f"unknown setting {k!r} in {path}; known: {', '.join(sorted(known))}"
                )
            values[k] = v
    for name in known:
        if f"FTCTL_{name.upper()}" in env:
            values[name] = env[f"FTCTL_{name.upper()}"]
    values.update(overrides)
    values["workspace"] = workspace
    typed = {k: _coerce(k, v, known[k].type) for k, v in values.items() if k in known}
    return Settings(**typed, extra=values.get("extra", {}))


# What `ftctl init` records in ftctl.toml: the line's data and how its examples are encoded (every
# later job of the line reads them back, so rows stay comparable).
LINE_KEYS = ("world", "upstream", "tasks", "model_line", "method", "chat_template", "max_length",
             "long_records", "trust_remote_code")


def save_settings(settings: Settings,
                  keys: tuple[str, ...] = LINE_KEYS) -> Path:
    """Persist the chosen keys to <workspace>/ftctl.toml (what `ftctl init` decided)."""
    settings.workspace.mkdir(parents=True, exist_ok=True)
    path = settings.workspace / "ftctl.toml"
    existing: dict[str, Any] = {}
    if path.exists():
        existing = dict(tomllib.loads(path.read_text()).get("ftctl", {}))
    dist = existing.pop("dist", None)  # kept as it is: `ftctl init` decides none of it
    existing.update({k: getattr(settings, k) for k in keys})
    lines = ["[ftctl]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(existing.items())]
    if dist:
        lines += ["", "[ftctl.dist]"] + [f"{k} = {_toml_value(v)}" for k, v in sorted(dist.items())]
    return write_text(path, "\n".join(lines) + "\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
