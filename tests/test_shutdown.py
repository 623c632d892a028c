"""SIGTERM: gunicorn stops taking connections, live calls' sockets get the grace period, /readyz says draining."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import time

import pytest
import websocket

from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL
from testkit.fakes.twilio_webhooks import signature_header
from testkit.servers import GunicornServer

# the app under real gunicorn, stopped with SIGTERM
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    env = {**BASE_TEST_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'drain.db'}", "SHUTDOWN_GRACE_SECONDS": "8"}
    with GunicornServer(env, log_path=tmp_path / "gunicorn.log") as running:
        yield running


def _readyz(conn: http.client.HTTPConnection) -> tuple[int, dict]:
    conn.request("GET", "/readyz")
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_sigterm_drains_live_sockets_within_the_grace_period(server):
    kept_alive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert _readyz(kept_alive)[0] == 200
    signed_for = TEST_BASE_URL.replace("https://", "wss://") + "/ws/twilio-media"
    call = websocket.create_connection(server.url.replace("http", "ws") + "/ws/twilio-media",
                                       subprotocols=["audio.twilio.com"], timeout=5,
                                       header=signature_header(signed_for, {}))

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)

    status, body = _readyz(kept_alive)
    assert (status, body["reason"]) == (503, "draining")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).recv(1)  # no new connections
    call.ping(b"still there?")
    assert call.recv_data_frame(control_frame=True)[1].data == b"still there?"  # the live call goes on
    assert server.process.poll() is None

    call.close()
    server.process.wait(timeout=8)
    assert time.monotonic() - started < 7, "the worker should exit as soon as the last call ends"
    assert "draining" in server.logs()
