"""The real Node bridge process (with a fake WhatsApp socket) and the real app under gunicorn, together.

A staff send through `/api/whatsapp/send` goes app → signed `POST /send` → bridge → socket, and an
inbound WhatsApp message goes socket → bridge → signed webhook → CRM, exactly as in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests

from testkit.servers import PROJECT_ROOT, GunicornServer, flask_cli, free_port
from tests.conftest import BASE_TEST_ENV

# the real Node bridge and the app under gunicorn
pytestmark = pytest.mark.slow

BRIDGE_DIR = PROJECT_ROOT / "baileys-bridge"
BRIDGE_NUMBER = "+972500000000"  # the fake socket's own number (FAKE_WA_ME)
CUSTOMER = "+972501234567"
SECRET = "bridge-e2e-secret"


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def bridge_and_app(tmp_path):
    if not (BRIDGE_DIR / "node_modules").is_dir():
        pytest.fail("baileys-bridge/node_modules is missing: run ./run_tests.sh (it runs npm ci first)")
    bridge_port, control_port = free_port(), free_port()
    env = {
        **BASE_TEST_ENV,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
        "ENABLE_WA_BAILEYS": "true",
        "WA_SHARED_SECRET": SECRET,
        "WA_BAILEYS_URL": f"http://127.0.0.1:{bridge_port}",
        "WA_PROVIDER_PRIORITY": "baileys",
    }
    app = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    business = flask_cli(
        env, "create-business", "--name", "Bridge Salon", "--phone", "+97235550001", "--whatsapp", BRIDGE_NUMBER
    )
    token = flask_cli(
        env,
        "create-user",
        "--business-id",
        str(business["id"]),
        "--email",
        "owner@bridge.example",
        "--password",
        "pw-bridge",
        "--role",
        "owner",
    )["token"]
    bridge_log = open(tmp_path / "bridge.log", "wb")
    with app:
        bridge = subprocess.Popen(
            [shutil.which("node") or "node", "index.js"],
            cwd=BRIDGE_DIR,
            stdout=bridge_log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "WA_SOCKET_MODULE": "test/fakes/fake-socket.js",
                "FAKE_WA_CONTROL_PORT": str(control_port),
                "FAKE_WA_ME": BRIDGE_NUMBER[1:],
                "WA_BAILEYS_PORT": str(bridge_port),
                "WA_SHARED_SECRET": SECRET,
                "WA_SESSION_DIR": str(tmp_path / "wa_session"),
                "APP_URL": app.url,
                "WA_SEND_MIN_INTERVAL_MS": "50",
            },
        )
        try:
            bridge_url = f"http://127.0.0.1:{bridge_port}"
            wait_for(lambda: _get_json(bridge_url + "/status").get("state") == "open")
            # the bridge reported the open connection to the app, which the send router relies on
            wait_for(lambda: _get_json(app.url + "/readyz").get("whatsapp_baileys_state") == "open")
            yield {"app": app, "token": token, "control": f"http://127.0.0.1:{control_port}", "bridge": bridge_url}
        finally:
            bridge.terminate()
            bridge.wait(timeout=10)
            bridge_log.close()


def _get_json(url: str) -> dict:
    try:
        return requests.get(url, timeout=2).json()
    except (requests.RequestException, ValueError):
        return {}


def test_send_and_receive_through_the_real_bridge(bridge_and_app):
    app, control = bridge_and_app["app"], bridge_and_app["control"]
    auth = {"Authorization": f"Bearer {bridge_and_app['token']}"}

    sent = requests.post(
        app.url + "/api/whatsapp/send",
        headers=auth,
        timeout=15,
        json={"to": "050-123-4567", "text": "התור שלך אושר", "provider": "baileys"},
    )
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["success"] is True and body["provider"] == "baileys" and body["provider_message_id"]
    [delivered] = requests.get(control + "/sent", timeout=5).json()["sent"]
    assert delivered["jid"] == CUSTOMER[1:] + "@s.whatsapp.net"
    assert delivered["content"]["text"] == "התור שלך אושר" and delivered["id"] == body["provider_message_id"]

    inbound = {
        "key": {"remoteJid": CUSTOMER[1:] + "@s.whatsapp.net", "fromMe": False, "id": "3EB0INBOUND01"},
        "message": {"conversation": "תודה, נתראה מחר"},
        "pushName": "Dana",
        "messageTimestamp": int(time.time()),
    }
    assert requests.post(control + "/inject", json=inbound, timeout=5).status_code == 200

    def inbound_in_crm():
        threads = requests.get(
            app.url + "/api/crm/threads", headers=auth, timeout=5, params={"channel": "whatsapp"}
        ).json()["items"]
        if not threads:
            return None
        messages = requests.get(app.url + f"/api/crm/threads/{threads[0]['id']}", headers=auth, timeout=5).json()[
            "messages"
        ]
        items = messages["items"] if isinstance(messages, dict) else messages
        return [m for m in items if m["direction"] == "in"] and items

    messages = wait_for(inbound_in_crm)
    by_direction = {m["direction"]: m for m in messages}
    assert by_direction["in"]["body"] == "תודה, נתראה מחר" and by_direction["in"]["provider"] == "baileys"
    assert by_direction["out"]["body"] == "התור שלך אושר"
    assert len(messages) == 2  # one thread for the customer, both directions, no duplicates

    # A replayed event from WhatsApp is suppressed by the bridge and, failing that, by the app's unique key.
    assert requests.post(control + "/inject", json=inbound, timeout=5).status_code == 200
    time.sleep(1.0)
    assert len(inbound_in_crm()) == 2
