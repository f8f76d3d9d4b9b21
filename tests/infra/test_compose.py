"""infra/ is validated, not just stored: the files parse, every service's command is a real
ftctl command with real options, env names are ftctl settings, ports and URLs agree, no secret
is committed, and there is exactly one scheduler."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer
import yaml

from service.dist.config import DistConfig
from service.settings import Settings

INFRA = Path(__file__).resolve().parents[2] / "infra"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((INFRA / name).read_text())


def generated_gpu_workers(n: int) -> dict[str, Any]:
    out = subprocess.run(["bash", str(INFRA / "gpu-workers.sh"), str(n)], capture_output=True,
                         text=True, check=True)
    return yaml.safe_load(out.stdout)


def ftctl_group() -> Any:
    """The real `ftctl` command tree (cli/app.py), exactly what the containers run."""
    from cli.app import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    return group


def ftctl_argv(command: Any) -> list[str] | None:
    """The ftctl argv of a compose command (list, or `sh -c "exec ftctl …"`), else None."""
    argv = command if isinstance(command, list) else shlex.split(command)
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", argv[2]))
        argv = argv[1:] if argv[0] == "exec" else argv
    return argv[1:] if argv and argv[0] == "ftctl" else None


def services() -> dict[str, dict[str, Any]]:
    out = {}
    for origin, doc in (("compose.yml", load("compose.yml")), ("gpu-node.yml", load("gpu-node.yml")),
                        ("gpu-workers.sh", generated_gpu_workers(3))):
        out.update({f"{origin}:{name}": svc for name, svc in doc["services"].items()})
    return out


def test_every_ftctl_service_runs_a_real_command_with_real_options() -> None:
    group = ftctl_group()
    checked = 0
    for name, svc in services().items():
        argv = ftctl_argv(svc.get("command", ["?"]))
        if argv is None:
            continue
        cmd, args = group, list(argv)
        while hasattr(cmd, "commands"):  # a group (typer ships its own click classes)
            sub = cmd.commands.get(args[0])
            assert sub is not None, f"service {name}: `ftctl {' '.join(argv)}` is not a command"
            cmd, args = sub, args[1:]
        cmd.make_context(name, args, resilient_parsing=False)  # raises on unknown options
        checked += 1
    assert checked >= 7


def test_env_names_are_ftctl_settings() -> None:
    known = {f"FTCTL_{f.name.upper()}" for f in [*fields(Settings), *fields(DistConfig)]}
    used: set[str] = set()
    for svc in services().values():
        used |= {k for k in (svc.get("environment") or {}) if k.startswith("FTCTL_")}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.startswith("FTCTL_") and "=" in line:
            used.add(line.split("=", 1)[0])
    assert used - {"FTCTL_IMAGE", "FTCTL_SHARED_DIR"} <= known, used - known
    assert {"FTCTL_BROKER_URL", "FTCTL_TRACKING_URI", "FTCTL_MAX_JOB_SECONDS"} <= used


def test_no_secret_is_committed() -> None:
    for line in (INFRA / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if re.search(r"PASSWORD|SECRET", key) and not key.startswith("#"):
            assert value == "", f"{key} has a value in .env.example"
    text = (INFRA / "compose.yml").read_text()
    assert "password" not in re.sub(r"(?i)\$\{?\w*PASSWORD\w*|_PASSWORD|PASSWORD_|password:|tracking_password", "", text).lower()


def test_ports_urls_and_server_flags_agree() -> None:
    compose = load("compose.yml")["services"]
    env = compose["worker-cpu"]["environment"]
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/0", env["FTCTL_BROKER_URL"])
    redis_cmd = compose["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes" and "--requirepass" in redis_cmd
    assert compose["redis"]["ports"] == ["${REDIS_PORT:-6379}:6379"]
    mlflow = " ".join(compose["mlflow"]["command"])
    port = re.search(r"--port (\d+)", mlflow).group(1)  # type: ignore[union-attr]
    assert env["FTCTL_TRACKING_URI"] == f"http://mlflow:{port}"
    assert compose["mlflow"]["ports"] == [f"${{MLFLOW_PORT:-5000}}:{port}"]
    assert compose["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "--app-name basic-auth" in mlflow and "postgresql+psycopg2://" in mlflow and "s3://mlflow" in mlflow


def test_exactly_one_scheduler_and_one_gpu_worker_per_gpu() -> None:
    compose = load("compose.yml")["services"]
    schedulers = [n for n, s in compose.items() if ftctl_argv(s.get("command", ["?"])) == ["scheduler"]]
    assert schedulers == ["scheduler"] and compose["scheduler"]["deploy"]["replicas"] == 1
    gen = generated_gpu_workers(4)["services"]
    devices = []
    for i, (name, svc) in enumerate(sorted(gen.items())):
        [dev] = svc["deploy"]["resources"]["reservations"]["devices"]
        assert name == f"worker-gpu{i}" and dev["device_ids"] == [str(i)]
        assert svc["environment"]["NVIDIA_VISIBLE_DEVICES"] == str(i)
        # Inside the container the one visible GPU is index 0.
        assert ftctl_argv(svc["command"]) == ["worker", "--queue", "gpu", "--gpu", "0"]
        devices.append(dev["device_ids"][0])
    assert len(set(devices)) == 4
    assert subprocess.run(["bash", str(INFRA / "gpu-workers.sh"), "zero"], capture_output=True).returncode == 2


def test_dev_services_script_is_valid_and_idempotent() -> None:
    script = INFRA / "dev" / "ensure-services.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    from tests.infra.workers import REDIS, port_open

    assert port_open(*REDIS), "Redis is not running here: `make services` starts it"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "redis: up" in done.stderr
