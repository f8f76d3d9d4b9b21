"""The CLI skeleton: --help is fast because heavy libraries are imported lazily."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def test_version_prints_package_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ftctl {version('ftctl')}"


def test_help_does_not_import_heavy_libraries() -> None:
    # `ftctl --help` must not pay torch/lightning/mlflow import time (7-14 s measured).
    code = (
        "import sys; from cli.app import app; "
        "heavy = [m for m in ('torch', 'lightning', 'mlflow', 'transformers', 'peft') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
