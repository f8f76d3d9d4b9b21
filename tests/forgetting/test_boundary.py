"""Dependency direction: forgetting/ never pulls in torch, MLflow or the other ftctl layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = (
    "torch",
    "mlflow",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "training",
    "service",
    "cli",
)

_PROBE = """
import importlib, json, pkgutil, sys
import forgetting
mods = ["forgetting"] + [m.name for m in pkgutil.walk_packages(forgetting.__path__, "forgetting.")]
for name in mods:
    importlib.import_module(name)
# exercise the lazy imports too (implicit and threadpoolctl are imported inside ALS's fit)
import numpy as np
from forgetting.completion import make_completer
make_completer("als", factors=2, iterations=1).fit(np.random.default_rng(0).random((4, 30)))
print(json.dumps({"modules": mods, "loaded": sorted(sys.modules)}))
"""


def test_importing_every_forgetting_module_loads_no_heavy_or_upper_layer() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert "forgetting.evaluate" in doc["modules"] and "forgetting.completion.als" in doc["modules"]
    assert len(doc["modules"]) >= 15  # the walk really found the package's modules
    bad = sorted({m for m in doc["loaded"] if m.split(".")[0] in FORBIDDEN})
    assert bad == [], f"forgetting imported {bad}"
