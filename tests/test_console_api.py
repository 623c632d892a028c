"""The console's own endpoints: call recordings (Twilio REST fake), the WhatsApp connection screen and
its QR code (bridge fake), one-step payment links, and user management. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
import segno
import sqlalchemy as sa

from server.app_state import services
from server.db import dao_crm
from server.db.models import ApiToken, Customer, Message, Payment, User
from server.whatsapp.bridge_state import record_bridge_state
from testkit.fakes.bridge import FakeBridge
from testkit.fakes.twilio_rest import FakeTwilioRest
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, add_user, create_tenant
from tests.payments_support import add_invoice, payment_env, paypal, paypal_server, tranzila, tranzila_server  # noqa: F401

ACCOUNT = BASE_TEST_ENV["TWILIO_ACCOUNT_SID"]
RECORDING = "RE" + "ab" * 16
AUDIO = b"ID3" + bytes(range(256)) * 40  # 10 KiB standing in for an MP3
WA_SECRET = "console-test-bridge-secret"
CUSTOMER = "+972501234567"


@pytest.fixture(scope="module")
def twilio_server():
    with FakeTwilioRest(account_sid=ACCOUNT, auth_token=TEST_TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def twilio(twilio_server):
    twilio_server.requests.clear()
    twilio_server.recordings.clear()
    twilio_server.succeed("Recordings")
    return twilio_server


@pytest.fixture
def bridge():
    with FakeBridge(WA_SECRET) as fake:
        yield fake


def add_call(db, business_id: int, call_sid: str, recording_sid: str | None = RECORDING) -> None:
    with db.scope() as session:
        call, _ = dao_crm.create_call(
            session, business_id, call_sid=call_sid, from_number=CUSTOMER, to_number="+97235550001", status="completed"
        )
        call.recording_sid = recording_sid
        call.recording_url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording_sid}"


# ---- recordings ---------------------------------------------------------------------------------


@pytest.fixture
def rec_app(make_app, twilio, tmp_path):
    return make_app(TWILIO_API_BASE_URL=twilio.url, RECORDING_CACHE_DIR=str(tmp_path / "recordings"))


def test_a_recording_is_fetched_once_with_basic_auth_then_served_from_disk(rec_app, twilio, tmp_path):
    client, db = rec_app.test_client(), services(rec_app).database
    tenant = create_tenant(db)
    add_call(db, tenant.business_id, "CA" + "1" * 32)
    twilio.recordings[RECORDING] = AUDIO
    for _ in range(2):
        response = client.get(f"/api/crm/calls/{'CA' + '1' * 32}/recording", headers=tenant.headers)
        assert response.status_code == 200 and response.mimetype == "audio/mpeg"
        assert response.data == AUDIO and response.headers["Accept-Ranges"] == "bytes"
    [fetch] = twilio.requests_for("Recordings")
    assert fetch.auth_user == ACCOUNT and fetch.path == f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}.mp3"
    assert (tmp_path / "recordings" / f"{RECORDING}.mp3").read_bytes() == AUDIO


def test_a_recording_answers_range_requests_for_seeking(rec_app, twilio):
    client, db = rec_app.test_client(), services(rec_app).database
    tenant = create_tenant(db)
    add_call(db, tenant.business_id, "CA" + "2" * 32)
    twilio.recordings[RECORDING] = AUDIO
    response = client.get(
        f"/api/crm/calls/{'CA' + '2' * 32}/recording", headers={**tenant.headers, "Range": "bytes=100-199"}
    )
    assert response.status_code == 206 and response.data == AUDIO[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(AUDIO)}"
    tail = client.get(f"/api/crm/calls/{'CA' + '2' * 32}/recording", headers={**tenant.headers, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == AUDIO[-10:]
    beyond = client.get(
        f"/api/crm/calls/{'CA' + '2' * 32}/recording", headers={**tenant.headers, "Range": f"bytes={len(AUDIO) + 5}-"}
    )
    assert beyond.status_code == 416


def test_no_recording_another_business_or_unknown_call_is_404(rec_app, twilio):
    client, db = rec_app.test_client(), services(rec_app).database
    tenant = create_tenant(db)
    other = create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    add_call(db, tenant.business_id, "CA" + "3" * 32, recording_sid=None)
    add_call(db, other.business_id, "CA" + "4" * 32)
    none = client.get(f"/api/crm/calls/{'CA' + '3' * 32}/recording", headers=tenant.headers)
    assert none.status_code == 404 and none.json["error"] == "no_recording"
    theirs = client.get(f"/api/crm/calls/{'CA' + '4' * 32}/recording", headers=tenant.headers)
    assert theirs.status_code == 404 and theirs.json["error"] == "not_found"
    for sid in ("CA-unknown", "x" * 65, "%00"):
        assert client.get(f"/api/crm/calls/{sid}/recording", headers=tenant.headers).status_code == 404
    assert client.get(f"/api/crm/calls/{'CA' + '4' * 32}/recording").status_code == 401
    assert twilio.requests_for("Recordings") == []


def test_twilio_failures_are_clear_and_nothing_is_cached(rec_app, twilio, tmp_path):
    client, db = rec_app.test_client(), services(rec_app).database
    tenant = create_tenant(db)
    add_call(db, tenant.business_id, "CA" + "5" * 32)
    path = f"/api/crm/calls/{'CA' + '5' * 32}/recording"
    twilio.fail("Recordings", code=20404, status=404, times=1)
    gone = client.get(path, headers=tenant.headers)
    assert gone.status_code == 404 and gone.json["error"] == "no_recording"
    twilio.fail("Recordings", code=20500, status=500, times=1)
    broken = client.get(path, headers=tenant.headers)
    assert broken.status_code == 502 and broken.json["error"] == "recording_unavailable"
    assert TEST_TWILIO_TOKEN not in broken.get_data(as_text=True)
    assert not (tmp_path / "recordings" / f"{RECORDING}.mp3").exists()
    assert list(tmp_path.glob("**/.download-*")) == []  # no half-written file left behind
    twilio.recordings[RECORDING] = AUDIO
    assert client.get(path, headers=tenant.headers).data == AUDIO  # a later try works


def test_wrong_twilio_credentials_are_a_502_not_a_leak(make_app, twilio, tmp_path):
    app = make_app(TWILIO_API_BASE_URL=twilio.url, TWILIO_AUTH_TOKEN="not-the-token", RECORDING_CACHE_DIR=str(tmp_path))
    tenant = create_tenant(services(app).database)
    add_call(services(app).database, tenant.business_id, "CA" + "6" * 32)
    response = app.test_client().get(f"/api/crm/calls/{'CA' + '6' * 32}/recording", headers=tenant.headers)
    assert response.status_code == 502 and "not-the-token" not in response.get_data(as_text=True)


# ---- the WhatsApp connection screen -------------------------------------------------------------


@pytest.fixture
def wa_app(make_app, bridge):
    return make_app(ENABLE_WA_BAILEYS="true", WA_SHARED_SECRET=WA_SECRET, WA_BAILEYS_URL=bridge.url)


def test_connection_status_follows_the_bridge(wa_app, bridge):
    client, tenant = wa_app.test_client(), create_tenant(services(wa_app).database)
    status = lambda: client.get("/api/crm/whatsapp/connection", headers=tenant.headers).json  # noqa: E731
    assert status() == {"provider": "baileys", "status": "connected", "qr_available": False}
    bridge.state, bridge.qr = "connecting", "2@ref,noise=,identity=,adv="
    assert status() == {"provider": "baileys", "status": "qr", "qr_available": True}
    bridge.qr = None
    assert status() == {"provider": "baileys", "status": "connecting", "qr_available": False}
    bridge.state = "logged_out"
    assert status() == {"provider": "baileys", "status": "logged_out", "qr_available": False}


def test_the_qr_code_is_drawn_from_the_bridge_string_fetched_with_the_signature(wa_app, bridge):
    client, tenant = wa_app.test_client(), create_tenant(services(wa_app).database)
    bridge.state, bridge.qr = "connecting", "2@AbCdEf123,NoiseKey=,IdentityKey=,Adv="
    response = client.get("/api/crm/whatsapp/qr.svg", headers=tenant.headers)
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.headers["Cache-Control"] == "no-store"
    root = ET.fromstring(response.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and int(root.get("width")) >= 200
    assert [r.signature_ok for r in bridge.qr_requests] == [True]

    def drawn(text: str) -> bytes:
        out = io.BytesIO()
        segno.make_qr(text, error="m").save(
            out, kind="svg", scale=6, border=4, xmldecl=False, title="WhatsApp QR", dark="#000", light="#fff"
        )
        return out.getvalue()

    assert response.data == drawn(bridge.qr) and response.data != drawn(bridge.qr + "x")
    assert bridge.qr.encode() not in response.data  # the string itself never leaves the app


def test_no_qr_code_is_404_and_a_silent_bridge_503(wa_app, bridge):
    client, db = wa_app.test_client(), services(wa_app).database
    tenant = create_tenant(db)
    response = client.get("/api/crm/whatsapp/qr.svg", headers=tenant.headers)
    assert response.status_code == 404 and response.json["error"] == "no_qr"
    with db.scope() as session:
        record_bridge_state(session, tenant.business_id, "connecting", False)
    bridge.stop()
    silent = client.get("/api/crm/whatsapp/qr.svg", headers=tenant.headers)
    assert silent.status_code == 503 and silent.json["error"] == "bridge_unavailable"
    # The connection screen falls back to what the bridge last reported through its webhook.
    assert client.get("/api/crm/whatsapp/connection", headers=tenant.headers).json == {
        "provider": "baileys",
        "status": "connecting",
        "qr_available": False,
    }


def test_a_bridge_refusing_our_signature_is_503_not_a_qr(make_app, bridge):
    app = make_app(ENABLE_WA_BAILEYS="true", WA_SHARED_SECRET="another-secret", WA_BAILEYS_URL=bridge.url)
    bridge.qr = "2@x,y=,z=,w="
    tenant = create_tenant(services(app).database)
    response = app.test_client().get("/api/crm/whatsapp/qr.svg", headers=tenant.headers)
    assert response.status_code == 503 and [r.signature_ok for r in bridge.qr_requests] == [False]


def test_without_baileys_the_status_names_twilio_or_disabled(make_app):
    twilio_only = make_app(ENABLE_WA_TWILIO="true", TWILIO_WA_FROM="+97235550999")
    tenant = create_tenant(services(twilio_only).database)
    client = twilio_only.test_client()
    assert client.get("/api/crm/whatsapp/connection", headers=tenant.headers).json == {
        "provider": "twilio",
        "status": "connected",
        "qr_available": False,
    }
    assert client.get("/api/crm/whatsapp/qr.svg", headers=tenant.headers).status_code == 501
    nothing = make_app()
    other = create_tenant(services(nothing).database, name="B", phone="+97235550301", whatsapp="+97235550302")
    assert nothing.test_client().get("/api/crm/whatsapp/connection", headers=other.headers).json == {
        "provider": None,
        "status": "disabled",
        "qr_available": False,
    }


def test_each_business_sees_its_own_instance_and_qr_code(wa_app, bridge):
    db = services(wa_app).database
    salon = create_tenant(db)
    garage = create_tenant(db, name="Garage Moshe", phone="+97235550401", whatsapp="+97235550402")
    bridge.strict = True
    bridge.add_instance(salon.business_id, "open", me="+972500000101")
    bridge.add_instance(garage.business_id, "connecting", qr="2@garage-only,n=,i=,a=")
    client = wa_app.test_client()
    status = lambda tenant: client.get("/api/crm/whatsapp/connection", headers=tenant.headers).json  # noqa: E731
    assert status(salon) == {"provider": "baileys", "status": "connected", "qr_available": False}
    assert status(garage) == {"provider": "baileys", "status": "qr", "qr_available": True}
    assert client.get("/api/crm/whatsapp/qr.svg", headers=salon.headers).status_code == 404  # connected: none
    garage_qr = client.get("/api/crm/whatsapp/qr.svg", headers=garage.headers)
    assert garage_qr.status_code == 200
    # Each asked the bridge about its own business only, whatever the request carried.
    hijack = client.get(f"/api/crm/whatsapp/qr.svg?business_id={garage.business_id}", headers=salon.headers)
    assert hijack.status_code == 404
    assert [r.body["business_id"] for r in bridge.qr_requests] == [
        salon.business_id,
        garage.business_id,
        salon.business_id,
    ]
    # A business the bridge runs no instance for yet: "not set up", and no QR code.
    third = create_tenant(db, name="C", phone="+97235550501", whatsapp="+97235550502")
    assert status(third) == {"provider": "baileys", "status": "not_set_up", "qr_available": False}
    assert client.get("/api/crm/whatsapp/qr.svg", headers=third.headers).status_code == 404


def test_only_owners_see_the_connection_screen(wa_app):
    db = services(wa_app).database
    agent = add_user(db, create_tenant(db).business_id, "agent")
    for path in ("/api/crm/whatsapp/connection", "/api/crm/whatsapp/qr.svg"):
        assert wa_app.test_client().get(path, headers=agent.headers).status_code == 403


# ---- payment links in one step ------------------------------------------------------------------


@pytest.fixture
def link_app(make_app, paypal, tranzila, bridge):  # noqa: F811
    return make_app(
        **payment_env(paypal, tranzila),
        ENABLE_WA_BAILEYS="true",
        WA_SHARED_SECRET=WA_SECRET,
        WA_BAILEYS_URL=bridge.url,
        WA_PROVIDER_PRIORITY="baileys",
    )


@pytest.fixture
def shop(link_app):
    db = services(link_app).database
    tenant = create_tenant(db, payments_enabled=True)
    with db.scope() as session:
        record_bridge_state(session, tenant.business_id, "open", False)
        customer = dao_crm.upsert_customer(session, tenant.business_id, phone=CUSTOMER, name="דנה")
        thread = dao_crm.upsert_thread(session, tenant.business_id, customer.id, "whatsapp")
        tenant.customer_id, tenant.thread_id = customer.id, thread.id
    return tenant


def test_an_invoice_link_is_created_and_sent_on_whatsapp_in_one_step(link_app, shop, bridge):
    client = link_app.test_client()
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=shop.customer_id, amount_minor=4990)
    response = client.post(
        f"/api/crm/invoices/{invoice_id}/payment-link",
        json={"provider": "paypal", "send_whatsapp": True},
        headers=shop.headers,
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["url"].startswith(TEST_BASE_URL + "/pay/") and body["payment"]["url"] == body["url"]
    assert body["payment"]["invoice_id"] == invoice_id and body["payment"]["amount_minor"] == 4990
    assert body["whatsapp"]["status"] == "sent"
    [send] = bridge.accepted
    assert send.body["to"] == CUSTOMER and body["url"] in send.body["text"] and "49.90" in send.body["text"]
    with services(link_app).database.scope() as session:
        message = session.get(Message, body["whatsapp"]["message_id"])
        assert message.thread_id == shop.thread_id and message.status == "sent" and body["url"] in message.body


def test_a_repeat_with_the_same_key_answers_the_same_payment_and_sends_once(link_app, shop, bridge):
    client = link_app.test_client()
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=shop.customer_id)
    headers = {**shop.headers, "Idempotency-Key": "link-1"}
    first = client.post(f"/api/crm/invoices/{invoice_id}/payment-link", json={"send_whatsapp": True}, headers=headers)
    again = client.post(f"/api/crm/invoices/{invoice_id}/payment-link", json={"send_whatsapp": True}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["payment"]["payment_id"] == first.json["payment"]["payment_id"]
    assert again.json["whatsapp"]["message_id"] == first.json["whatsapp"]["message_id"]
    assert len(bridge.accepted) == 1


def test_without_send_whatsapp_only_the_link_is_made(link_app, shop, bridge):
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=shop.customer_id)
    response = link_app.test_client().post(
        f"/api/crm/invoices/{invoice_id}/payment-link", json={}, headers=shop.headers
    )
    assert response.status_code == 201 and response.json["whatsapp"] is None and bridge.sends == []


def test_a_failed_send_keeps_the_payment(link_app, shop, bridge):
    bridge.mode = "not_connected"
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=shop.customer_id)
    response = link_app.test_client().post(
        f"/api/crm/invoices/{invoice_id}/payment-link", json={"send_whatsapp": True}, headers=shop.headers
    )
    assert response.status_code == 201, response.json
    assert response.json["whatsapp"]["status"] == "failed" and response.json["whatsapp"]["error"]
    with services(link_app).database.scope() as session:
        assert session.get(Payment, response.json["payment"]["payment_id"]) is not None


def test_a_thread_link_goes_to_the_conversation_customer(link_app, shop, bridge):
    response = link_app.test_client().post(
        f"/api/crm/threads/{shop.thread_id}/payment-link",
        json={"amount": "120.00", "description": "תספורת וצבע", "provider": "tranzila"},
        headers=shop.headers,
    )
    assert response.status_code == 201, response.json
    payment = response.json["payment"]
    assert (payment["amount_minor"], payment["provider"], payment["customer_id"]) == (
        12000,
        "tranzila",
        shop.customer_id,
    )
    [send] = bridge.accepted
    assert (
        send.body["to"] == CUSTOMER and "תספורת וצבע" in send.body["text"] and response.json["url"] in send.body["text"]
    )


@pytest.mark.parametrize(
    "path_kind, body, field",
    [
        ("invoice", {"provider": "bitcoin"}, "provider"),
        ("invoice", {"send_whatsapp": "yes"}, "send_whatsapp"),
        ("invoice", {"surprise": 1}, "surprise"),
        ("thread", {"description": "x"}, "amount"),
        ("thread", {"amount": "10"}, "description"),
        ("thread", {"amount": "-5", "description": "x"}, "amount"),
        ("thread", {"amount": "10", "description": "x", "currency": "BTC"}, "currency"),
    ],
)
def test_bad_link_requests_are_400_and_make_nothing(link_app, shop, bridge, path_kind, body, field):
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=shop.customer_id)
    path = (
        f"/api/crm/invoices/{invoice_id}/payment-link"
        if path_kind == "invoice"
        else f"/api/crm/threads/{shop.thread_id}/payment-link"
    )
    response = link_app.test_client().post(path, json=body, headers=shop.headers)
    assert response.status_code == 400 and response.json["field"] == field, response.json
    with services(link_app).database.scope() as session:
        assert session.scalar(sa.select(sa.func.count(Payment.id))) == 0
    assert bridge.sends == []


def test_links_for_another_business_or_a_customer_without_whatsapp_are_refused(link_app, shop, bridge):
    db = services(link_app).database
    other = create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102", payments_enabled=True)
    theirs = add_invoice(link_app, other.business_id)
    client = link_app.test_client()
    assert client.post(f"/api/crm/invoices/{theirs}/payment-link", json={}, headers=shop.headers).status_code == 404
    with db.scope() as session:
        nobody = Customer(business_id=shop.business_id, name="בלי טלפון", email="x@example.test")
        session.add(nobody)
        session.flush()
        nobody_id = nobody.id
    invoice_id = add_invoice(link_app, shop.business_id, customer_id=nobody_id)
    response = client.post(
        f"/api/crm/invoices/{invoice_id}/payment-link", json={"send_whatsapp": True}, headers=shop.headers
    )
    assert response.status_code == 409 and response.json["error"] == "no_whatsapp_recipient"
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count(Payment.id))) == 0


# ---- users --------------------------------------------------------------------------------------


def test_an_owner_disables_and_enables_a_user(client, db, tenant):
    agent = add_user(db, tenant.business_id, "agent")
    response = client.patch(f"/api/crm/users/{agent.user_id}", json={"disabled": True}, headers=tenant.headers)
    assert response.status_code == 200 and response.json["disabled"] is True
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 401
    listed = {u["id"]: u["disabled"] for u in client.get("/api/crm/users", headers=tenant.headers).json["items"]}
    assert listed == {tenant.user_id: False, agent.user_id: True}
    response = client.patch(f"/api/crm/users/{agent.user_id}", json={"disabled": False}, headers=tenant.headers)
    assert response.json["disabled"] is False
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 200  # its API token works again
    actions = [r["action"] for r in client.get("/api/crm/audit", headers=tenant.headers).json["items"]]
    assert "user.disabled" in actions and "user.enabled" in actions


def test_user_changes_respect_roles_businesses_and_oneself(client, db, tenant, other_tenant):
    agent = add_user(db, tenant.business_id, "agent")
    admin = add_user(db, tenant.business_id, "admin")
    theirs = client.patch(f"/api/crm/users/{other_tenant.user_id}", json={"disabled": True}, headers=tenant.headers)
    assert theirs.status_code == 404
    above = client.patch(f"/api/crm/users/{admin.user_id}", json={"disabled": True}, headers=tenant.headers)
    assert above.status_code == 403
    self_ = client.patch(f"/api/crm/users/{tenant.user_id}", json={"disabled": True}, headers=tenant.headers)
    assert self_.status_code == 409 and self_.json["error"] == "cannot_disable_self"
    by_agent = client.patch(f"/api/crm/users/{tenant.user_id}", json={"disabled": True}, headers=agent.headers)
    assert by_agent.status_code == 403
    for body in ({}, {"disabled": "yes"}, {"disabled": True, "role": "admin"}):
        response = client.patch(f"/api/crm/users/{agent.user_id}", json=body, headers=tenant.headers)
        assert response.status_code == 400 and response.json["error"] == "invalid_field", body
    assert client.patch(f"/api/crm/users/{2**40}", json={"disabled": True}, headers=tenant.headers).status_code == 404


def test_a_password_reset_signs_the_user_out_but_keeps_api_tokens(client, db, tenant):
    agent = add_user(db, tenant.business_id, "agent")  # its token is an API token (unnamed)
    with db.scope() as session:
        email = session.get(User, agent.user_id).email
    browser = client.application.test_client()
    assert browser.post("/api/auth/session", json={"email": email, "password": "correct horse"}).status_code == 200
    response = client.post(
        f"/api/crm/users/{agent.user_id}/password", json={"password": "a new long password"}, headers=tenant.headers
    )
    assert response.status_code == 204
    assert browser.get("/api/auth/me").status_code == 401
    assert client.get("/api/crm/calls", headers=agent.headers).status_code == 200
    assert client.post("/api/auth/login", json={"email": email, "password": "correct horse"}).status_code == 401
    assert client.post("/api/auth/login", json={"email": email, "password": "a new long password"}).status_code == 200
    with db.scope() as session:
        tokens = session.scalars(sa.select(ApiToken).where(ApiToken.user_id == agent.user_id)).all()
        assert {t.name: t.revoked_at is not None for t in tokens if t.name != "login"} == {
            "": False,
            "console session": True,
        }
    for body in ({"password": "short"}, {"password": 12345678}, {}, {"password": "long enough", "x": 1}):
        bad = client.post(f"/api/crm/users/{agent.user_id}/password", json=body, headers=tenant.headers)
        assert bad.status_code == 400, body
