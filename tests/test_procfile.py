"""The `Procfile` as a platform runs it: each line's command through `bash -c`, with what the build step
installed on the PATH and nothing installed at boot.

Every process type comes up on a fresh database with no separate migration step (the web workers
and the jobs worker, started together, apply each migration exactly once), and stops cleanly on
SIGTERM. `pip` and `npm` on the PATH are traps: a line that tried to install would trip them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from server.db.migrate import migration_files
from testkit.procfile import procfile, start_process
from testkit.servers import free_port
from tests.conftest import BASE_TEST_ENV

pytestmark = pytest.mark.slow


def test_every_line_runs_a_prebuilt_process_and_installs_nothing():
    processes = procfile()
    assert set(processes) == {"web", "worker", "bridge"}
    for command in processes.values():
        assert not re.search(r"\b(pip3?|npm|venv|start_all\.sh)\b", command), command
    web = processes["web"]
    assert web.startswith("gunicorn ") and "--config gunicorn.conf.py" in web and "--worker-class gevent" in web
    assert "${PORT" in web


def _trap_installers(directory: Path) -> Path:
    """`pip`, `pip3` and `npm` that record being run and fail."""
    directory.mkdir()
    marker = directory / "installer-ran"
    for name in ("pip", "pip3", "npm"):
        shim = directory / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> {marker}\nexit 1\n')
        shim.chmod(0o755)
    return marker


def _wait(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up")


def _applied_migrations(log_text: str) -> list[str]:
    applied = []
    for line in log_text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "migration_applied":
                applied.append(record["migration"])
    return applied


def test_each_process_starts_from_its_line_on_a_fresh_database(tmp_path):
    marker = _trap_installers(tmp_path / "bin")
    port, bridge_port = free_port(), free_port()
    database = tmp_path / "procfile.db"
    env = {
        **os.environ,
        **BASE_TEST_ENV,
        # What the build step installed: the interpreter's scripts (gunicorn, flask) and node.
        "PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "DATABASE_URL": f"sqlite:///{database}",
        "JOBS_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "SHUTDOWN_GRACE_SECONDS": "3",
        # the bridge's own settings (baileys-bridge/README.md); its socket is the test fake
        "WA_SHARED_SECRET": "procfile-secret",
        "WA_BAILEYS_PORT": str(bridge_port),
        "WA_SESSION_DIR": str(tmp_path / "session"),
        "WA_SOCKET_MODULE": "baileys-bridge/test/fakes/fake-socket.js",
        "APP_URL": f"http://127.0.0.1:{port}",
    }
    running = {name: start_process(name, env, open(tmp_path / f"{name}.log", "wb")) for name in procfile()}
    try:
        _wait(lambda: requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200, "web")
        _wait(lambda: "Huey consumer started" in (tmp_path / "worker.log").read_text(errors="replace"), "worker")
        _wait(lambda: requests.get(f"http://127.0.0.1:{bridge_port}/healthz", timeout=2).ok, "bridge")
        for name, process in running.items():
            assert process.poll() is None, f"{name} exited:\n{(tmp_path / f'{name}.log').read_text()[-2000:]}"

        # Migrated at start by the processes themselves, each migration exactly once.
        expected = [path.stem for path in migration_files()]
        engine = sa.create_engine(f"sqlite:///{database}")
        with engine.connect() as conn:
            recorded = conn.execute(sa.text("SELECT name FROM schema_migrations")).scalars().all()
        engine.dispose()
        assert sorted(recorded) == expected
        logs = "".join((tmp_path / f"{name}.log").read_text(errors="replace") for name in ("web", "worker"))
        assert sorted(_applied_migrations(logs)) == expected
    finally:
        for process in running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        statuses = {}
        for name, process in running.items():
            try:
                statuses[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                statuses[name] = "killed"
    assert statuses == {"web": 0, "worker": 0, "bridge": 0}, statuses
    assert not marker.exists(), marker.read_text()
