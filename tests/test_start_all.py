"""`start_all.sh` with the Baileys bridge: both processes come up, and they live and die as a pair."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from testkit.servers import PROJECT_ROOT, free_port
from tests.conftest import BASE_TEST_ENV

# start_all.sh with the app and the Node bridge as real processes
pytestmark = pytest.mark.slow


def _wait_up(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def pair(tmp_path):
    port, bridge_port = free_port(), free_port()
    env = {
        **os.environ,
        **BASE_TEST_ENV,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'pair.db'}",
        "ENABLE_WA_BAILEYS": "true",
        "WA_SHARED_SECRET": "pair-secret",
        "WA_BAILEYS_PORT": str(bridge_port),
        "WA_SESSION_DIR": str(tmp_path / "session"),
        "WA_SOCKET_MODULE": "test/fakes/fake-socket.js",
        "WA_INSTANCES": "1",  # one business's WhatsApp account, started with the bridge
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    log = open(tmp_path / "start_all.log", "wb")
    process = subprocess.Popen(
        [str(PROJECT_ROOT / "start_all.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}/")
        _wait_up(f"http://127.0.0.1:{bridge_port}/healthz")
        yield process, port, bridge_port, tmp_path / "start_all.log"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _pids_listening(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except requests.RequestException:
        return False


def test_when_the_bridge_dies_both_stop_with_a_failure(pair):
    process, port, bridge_port, log = pair
    status = requests.get(f"http://127.0.0.1:{bridge_port}/status?business_id=1", timeout=5).json()
    assert status["state"] in ("connecting", "open")
    bridge = subprocess.run(["pgrep", "-f", "-s", str(process.pid), "node index.js"], capture_output=True, text=True)
    os.kill(int(bridge.stdout.split()[0]), signal.SIGKILL)
    assert process.wait(timeout=30) != 0
    assert not _pids_listening(port)
    assert "stopped the other" in log.read_text()


def test_sigterm_stops_both_cleanly(pair):
    process, port, bridge_port, _ = pair
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not _pids_listening(port) and not _pids_listening(bridge_port)
