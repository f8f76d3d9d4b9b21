"""Settings: defaults < TOML file < FTCTL_* < flags; the [ftctl.dist] table; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.dist.config import DistConfig
from service.errors import ServiceError
from service.settings import Settings, load_settings, save_settings


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    (tmp_path / "ftctl.toml").write_text('[ftctl]\nmethod = "knn"\nk = 12\ntemperature = 0.2\n')
    s = load_settings(overrides={"workspace": tmp_path, "temperature": 0.3},
                      env={"FTCTL_K": "20"})
    assert (s.method, s.k, s.temperature, s.replay_ratio) == ("knn", 20, 0.3, 1 / 32)


def test_dist_table_reaches_the_celery_config_and_survives_init(tmp_path: Path) -> None:
    (tmp_path / "ftctl.toml").write_text(
        '[ftctl]\nmethod = "mf"\n\n[ftctl.dist]\nschedule_inbox = "*/10 * * * *"\nmax_job_seconds = 7200\n')
    s = load_settings(overrides={"workspace": tmp_path}, env={})
    dist = DistConfig.from_settings(s, env={})
    assert dist.schedule_inbox == "*/10 * * * *" and dist.max_job_seconds == 7200
    assert DistConfig.from_settings(s, env={"FTCTL_MAX_JOB_SECONDS": "60"}).max_job_seconds == 60
    save_settings(s.replace(world="tiny"))  # what `ftctl init` writes keeps the dist table
    again = load_settings(overrides={"workspace": tmp_path}, env={})
    assert again.world == "tiny" and DistConfig.from_settings(again, env={}).max_job_seconds == 7200


def test_bad_settings_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "ftctl.toml").write_text("[ftctl]\nmethdo = 'mf'\n")
    with pytest.raises(ServiceError, match="unknown setting 'methdo'"):
        load_settings(overrides={"workspace": tmp_path}, env={})
    (tmp_path / "ftctl.toml").write_text("[ftctl.dist]\nschedule_inbx = '5'\n")
    with pytest.raises(ServiceError, match=r"unknown \[ftctl\.dist\] setting"):
        DistConfig.from_settings(load_settings(overrides={"workspace": tmp_path}, env={}), env={})
    with pytest.raises(ServiceError, match="temperature must be > 0"):
        Settings(temperature=0)
    with pytest.raises(ServiceError, match="expects a float"):
        load_settings(overrides={"workspace": tmp_path / "x"}, env={"FTCTL_REPLAY_RATIO": "lots"})
    assert Settings().heldout == 0.0  # auto: the study's rule, resolved per upstream set
