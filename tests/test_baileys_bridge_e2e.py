"""The real Node bridge process (with a fake WhatsApp socket) and the real app under gunicorn, together.

A staff send through `/api/whatsapp/send` goes app → signed `POST /send` → bridge → socket, and an
inbound WhatsApp message goes socket → bridge → signed webhook → CRM, exactly as in production.
Several businesses share the one bridge process, each on its own instance (WhatsApp account).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests

from server.security import bridge_hmac
from testkit.servers import PROJECT_ROOT, GunicornServer, flask_cli, free_port
from tests.conftest import BASE_TEST_ENV

# the real Node bridge and the app under gunicorn
pytestmark = pytest.mark.slow

BRIDGE_DIR = PROJECT_ROOT / "baileys-bridge"
BRIDGE_NUMBER = "+972500000000"  # the fake socket's own number (FAKE_WA_ME)
CUSTOMER = "+972501234567"
SECRET = "bridge-e2e-secret"
# The fake media server speaks HTTPS (Baileys builds https:// media URLs): the bridge trusts its certificate.
MEDIA_CA = BRIDGE_DIR / "test" / "fakes" / "tls" / "media-server.crt"


def start_bridge(tmp_path, app_url: str, bridge_port: int, control_port: int, log, **extra: str):
    return subprocess.Popen(
        [shutil.which("node") or "node", "index.js"],
        cwd=BRIDGE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "WA_SOCKET_MODULE": "test/fakes/fake-socket.js",
            "FAKE_WA_CONTROL_PORT": str(control_port),
            "WA_BAILEYS_PORT": str(bridge_port),
            "WA_SHARED_SECRET": SECRET,
            "WA_AUTH_DIR": str(tmp_path / "wa_session"),
            "APP_URL": app_url,
            "WA_SEND_MIN_INTERVAL_MS": "50",
            "NODE_EXTRA_CA_CERTS": str(MEDIA_CA),
            **extra,
        },
    )


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
        bridge = start_bridge(
            tmp_path,
            app.url,
            bridge_port,
            control_port,
            bridge_log,
            FAKE_WA_ME=BRIDGE_NUMBER[1:],
            WA_INSTANCES=str(business["id"]),
        )
        try:
            bridge_url = f"http://127.0.0.1:{bridge_port}"
            wait_for(lambda: _get_json(f"{bridge_url}/status?business_id={business['id']}").get("state") == "open")
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


# ---- two businesses on one bridge ---------------------------------------------------------------

SALON_WA, GARAGE_WA = "+972500000101", "+972500000202"  # the numbers of the phones that link


def _signature(method: str, url: str) -> str:
    """A `v2` signature as the app makes it, over the method and the path with its query."""
    parts = urlsplit(url)
    return bridge_hmac.sign_request(SECRET, method, parts.path + (f"?{parts.query}" if parts.query else ""))


def _signed_get(url: str, header: str | None = None) -> requests.Response:
    return requests.get(url, headers={bridge_hmac.HEADER: header or _signature("GET", url)}, timeout=5)


@pytest.fixture
def two_businesses(tmp_path):
    if not (BRIDGE_DIR / "node_modules").is_dir():
        pytest.fail("baileys-bridge/node_modules is missing: run ./run_tests.sh (it runs npm ci first)")
    bridge_port, control_port = free_port(), free_port()
    env = {
        **BASE_TEST_ENV,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'two.db'}",
        "ENABLE_WA_BAILEYS": "true",
        "WA_SHARED_SECRET": SECRET,
        "WA_BAILEYS_URL": f"http://127.0.0.1:{bridge_port}",
        "WA_PROVIDER_PRIORITY": "baileys",
    }
    app = GunicornServer(env, log_path=tmp_path / "gunicorn.log")
    tenants = {}
    for name, voice, wa in (("salon", "+97235550001", SALON_WA), ("garage", "+97235550101", GARAGE_WA)):
        business = flask_cli(env, "create-business", "--name", name, "--phone", voice, "--whatsapp", wa)
        owner = flask_cli(
            env, "create-user", "--business-id", str(business["id"]), "--email", f"{name}@x.test",
            "--password", "pw-bridge", "--role", "owner",
        )  # fmt: skip
        tenants[name] = {"id": business["id"], "auth": {"Authorization": f"Bearer {owner['token']}"}, "wa": wa}
    admin = flask_cli(
        env, "create-user", "--business-id", str(tenants["salon"]["id"]), "--email", "admin@x.test",
        "--password", "pw-admin", "--role", "admin",
    )  # fmt: skip
    bridge_log = open(tmp_path / "bridge.log", "wb")
    with app:
        # No instance yet: the bridge starts empty and the admin adds one per business.
        bridge = start_bridge(tmp_path, app.url, bridge_port, control_port, bridge_log, FAKE_WA_LINK_BY_QR="1")
        try:
            wait_for(lambda: _get_json(f"http://127.0.0.1:{bridge_port}/healthz").get("ok"))
            yield {
                "app": app,
                "env": env,
                "tenants": tenants,
                "admin": {"Authorization": f"Bearer {admin['token']}"},
                "control": f"http://127.0.0.1:{control_port}",
                "bridge": f"http://127.0.0.1:{bridge_port}",
            }
        finally:
            bridge.terminate()
            bridge.wait(timeout=10)
            bridge_log.close()


def _crm_messages(app, tenant) -> list[dict]:
    threads = requests.get(
        app.url + "/api/crm/threads", headers=tenant["auth"], timeout=5, params={"channel": "whatsapp"}
    ).json()["items"]
    found = []
    for thread in threads:
        body = requests.get(app.url + f"/api/crm/threads/{thread['id']}", headers=tenant["auth"], timeout=5).json()
        items = body["messages"]["items"] if isinstance(body["messages"], dict) else body["messages"]
        found.extend(items)
    return found


def _inject(control: str, me: str, msg_id: str, text: str) -> None:
    message = {
        "me": me,
        "key": {"remoteJid": CUSTOMER[1:] + "@s.whatsapp.net", "fromMe": False, "id": msg_id},
        "message": {"conversation": text},
        "pushName": "Dana",
    }
    assert requests.post(control + "/inject", json=message, timeout=5).status_code == 200


def test_two_businesses_on_one_bridge(two_businesses):
    app, control, bridge = two_businesses["app"], two_businesses["control"], two_businesses["bridge"]
    salon, garage = two_businesses["tenants"]["salon"], two_businesses["tenants"]["garage"]
    admin = two_businesses["admin"]
    connection = lambda t: requests.get(app.url + "/api/crm/whatsapp/connection", headers=t["auth"], timeout=10).json()  # noqa: E731

    assert connection(salon)["status"] == "not_set_up"
    # The admin adds an instance for each business: API for one, CLI for the other.
    added = requests.post(app.url + f"/api/admin/businesses/{salon['id']}/whatsapp/instance", headers=admin, timeout=20)
    assert added.status_code == 200, added.text
    assert flask_cli(two_businesses["env"], "whatsapp-instance", "add", "--business-id", str(garage["id"]))[
        "business_id"
    ]

    # A signed request is good for what it names only: the salon's QR request replayed for the
    # garage, or a signed GET replayed as a DELETE, is refused by the real bridge.
    for tenant in (salon, garage):
        wait_for(lambda t=tenant: connection(t)["status"] == "qr")
    salon_qr_url = f"{bridge}/qr.json?business_id={salon['id']}"
    salon_qr_signature = _signature("GET", salon_qr_url)
    replayed = _signed_get(f"{bridge}/qr.json?business_id={garage['id']}", salon_qr_signature)
    assert replayed.status_code == 401 and replayed.json()["error"] == "unauthorized"
    assert "qr" not in replayed.json()
    assert _signed_get(salon_qr_url, salon_qr_signature).status_code == 200
    as_delete = {bridge_hmac.HEADER: _signature("GET", f"{bridge}/instances/{garage['id']}")}
    assert requests.delete(f"{bridge}/instances/{garage['id']}", headers=as_delete, timeout=5).status_code == 401
    listed_by_bridge = _signed_get(f"{bridge}/instances").json()["instances"]
    assert {i["business_id"] for i in listed_by_bridge} == {salon["id"], garage["id"]}

    # Each owner sees a QR code of their own on the console, and links their own phone with it.
    for tenant in (salon, garage):
        wait_for(lambda t=tenant: connection(t)["status"] == "qr")
        svg = requests.get(app.url + "/api/crm/whatsapp/qr.svg", headers=tenant["auth"], timeout=10)
        assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
        qr = _signed_get(f"{bridge}/qr.json?business_id={tenant['id']}").json()["qr"]  # what that SVG draws
        assert requests.post(control + "/scan", json={"qr": qr, "me": tenant["wa"]}, timeout=5).status_code == 200
    for tenant in (salon, garage):
        wait_for(lambda t=tenant: connection(t)["status"] == "connected")
    wait_for(lambda: _get_json(app.url + "/readyz").get("whatsapp_baileys_open") == "2/2")
    listed = requests.get(app.url + "/api/admin/whatsapp/instances", headers=admin, timeout=10).json()["items"]
    assert {(i["business_id"], i["state"], i["me"]) for i in listed} == {
        (salon["id"], "open", SALON_WA),
        (garage["id"], "open", GARAGE_WA),
    }

    # A message to each account lands in that business's CRM only.
    _inject(control, SALON_WA, "3EB0TOSALON", "לסלון")
    _inject(control, GARAGE_WA, "3EB0TOGARAGE", "למוסך")
    wait_for(lambda: _crm_messages(app, salon) and _crm_messages(app, garage))
    assert [m["body"] for m in _crm_messages(app, salon)] == ["לסלון"]
    assert [m["body"] for m in _crm_messages(app, garage)] == ["למוסך"]

    # A voice note to the garage arrives decrypted by the bridge and stored with the garage's message.
    note = b"OggS\x00\x02" + os.urandom(20_000)
    voice = {"me": GARAGE_WA, "from": CUSTOMER, "id": "3EB0VOICE", "kind": "audio", "ptt": True, "seconds": 3,
             "mimetype": "audio/ogg; codecs=opus", "data": base64.b64encode(note).decode()}  # fmt: skip
    assert requests.post(control + "/inject-media", json=voice, timeout=10).status_code == 200
    wait_for(lambda: len(_crm_messages(app, garage)) == 2)
    stored = [m for m in _crm_messages(app, garage) if m["kind"] == "audio"]
    assert len(stored) == 1 and len(_crm_messages(app, salon)) == 1
    [kept] = stored[0]["attachments"]  # what the app kept: the very bytes the phone sent
    assert (kept["status"], kept["voice_note"], kept["size"], kept["sha256"]) == (
        "stored",
        True,
        len(note),
        hashlib.sha256(note).hexdigest(),
    )

    # Each business sends through its own account.
    for tenant, text in ((salon, "מהסלון"), (garage, "מהמוסך")):
        sent = requests.post(
            app.url + "/api/whatsapp/send", headers=tenant["auth"], timeout=15, json={"to": CUSTOMER, "text": text}
        )
        assert sent.status_code == 200, sent.text
    out = requests.get(control + "/sent", timeout=5).json()["sent"]
    assert [(s["me"], s["content"]["text"]) for s in out] == [(SALON_WA[1:], "מהסלון"), (GARAGE_WA[1:], "מהמוסך")]

    # The salon's phone logs the bridge out (401): the garage keeps sending and receiving.
    assert requests.post(control + "/close", json={"me": SALON_WA, "code": 401}, timeout=5).status_code == 200
    wait_for(lambda: connection(salon)["status"] in ("logged_out", "qr"))
    wait_for(lambda: _get_json(app.url + "/readyz").get("whatsapp_baileys_open") == "1/2")
    assert connection(garage)["status"] == "connected"
    refused = requests.post(
        app.url + "/api/whatsapp/send", headers=salon["auth"], timeout=15, json={"to": CUSTOMER, "text": "x"}
    )
    assert refused.status_code == 503  # certainly not sent: the salon's account is out
    again = requests.post(
        app.url + "/api/whatsapp/send", headers=garage["auth"], timeout=15, json={"to": CUSTOMER, "text": "עדיין כאן"}
    )
    assert again.status_code == 200
    _inject(control, GARAGE_WA, "3EB0AFTER", "גם אחרי")
    wait_for(lambda: "גם אחרי" in [m["body"] for m in _crm_messages(app, garage)])
    assert len([m for m in _crm_messages(app, salon) if m["direction"] == "in"]) == 1

    # The admin removes the salon's instance; the garage is untouched.
    removed = requests.delete(
        app.url + f"/api/admin/businesses/{salon['id']}/whatsapp/instance", headers=admin, timeout=20
    )
    assert removed.json() == {"business_id": salon["id"], "removed": True}
    assert connection(salon)["status"] == "not_set_up" and connection(garage)["status"] == "connected"
