"""Screenshots of the MLflow UI on a finished workspace, in a real headless browser: what a
reviewer sees when they open ftctl's experiment, a release run and the model registry.

    python -m bench.ui_screenshots [--workspace WS] [--out docs/ui]

Without --workspace it makes one (tiny world, in a temporary folder): `ftctl demo --world tiny
--tasks 6`, then `ftctl release chain` of two tasks, so the pages show a chain. Then it serves the
UI (`ftctl ui`) and takes each page with Debian's Chromium (`apt-get install chromium`), headless,
with JavaScript given time to render (`--virtual-time-budget`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# MLflow 3's UI keeps a global GenAI / "Model training" switch (default GenAI) and, while it is
# shown, reads an experiment's kind from it rather than from the experiment's tag: the query
# parameter opens the pages on training runs (ftctl prints its UI links with it too).
ML_WORKFLOW = "machine_learning"
FTCTL = [sys.executable, "-m", "cli.app"]
# Chromium as this machine's probe ran it: no sandbox as root, and no background connections
# (the closed network refuses them, many at a time).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1900,1000", "--virtual-time-budget=20000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("no Chromium on this machine. Fix: apt-get update && apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ftctl(ws: Path, *args: str) -> Any:
    env = {**os.environ, "FTCTL_WORKSPACE": str(ws), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([*FTCTL, *args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ftctl {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def make_workspace(ws: Path) -> None:
    ftctl(ws, "demo", "--world", "tiny", "--tasks", "6")
    ftctl(ws, "release", "chain", "bible_law", "translate_fra", "--method", "mf")


def wait_http(url: str, seconds: float = 90) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the MLflow UI did not answer at {url} within {seconds:.0f} s")


def shoot(browser: str, url: str, png: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", url],
                       check=True, capture_output=True, timeout=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", type=Path, help="a finished workspace (default: make one)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    p.add_argument("--keep", type=Path, help="make the workspace here and keep it (default: a temporary one)")
    a = p.parse_args()
    browser = chromium()
    tmp = None
    ws = a.workspace
    if ws is None:
        if a.keep:
            ws = a.keep
        else:
            tmp = tempfile.mkdtemp(prefix="ftctl-ui-")
            ws = Path(tmp) / "ws"
        make_workspace(ws)
    line = ftctl(ws, "line", "show")
    name = line.get("model_line") or line.get("name")
    versions = ftctl(ws, "release", "list")
    # The demo's predicted release: its run shows it beside the demo's random and no-replay
    # releases of the same task (the chain's links have no such controls).
    release = next(v for v in versions if v["tags"].get("ftctl.parent_version") == "1"
                   and v["tags"].get("ftctl.method") not in ("none", "random"))
    port = free_port()
    env = {**os.environ, "FTCTL_WORKSPACE": str(ws)}
    server = subprocess.Popen([*FTCTL, "ui", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health")
        from service.settings import load_settings
        from service.tracking.store import Tracker

        t = Tracker(load_settings(overrides={"workspace": ws}))
        exp = t.experiment_id
        ml = f"workflowType={ML_WORKFLOW}"
        pages = {
            "experiment.png": f"{base}/#/experiments/{exp}?{ml}",
            "release-run.png": f"{base}/#/experiments/{exp}/runs/{release['run_id']}?{ml}",
            "release-figures.png": f"{base}/#/experiments/{exp}/runs/{release['run_id']}/artifacts/"
                                   f"figures/heldout_vs_controls.png?{ml}",
            "registry.png": f"{base}/#/models/{name}?{ml}",
        }
        a.out.mkdir(parents=True, exist_ok=True)
        for file, url in pages.items():
            shoot(browser, url, a.out / file)
    finally:
        os.killpg(server.pid, 15)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"out": str(a.out), "pages": pages, "release_version": release["version"],
                      "sizes": {f: (a.out / f).stat().st_size for f in pages}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
