"""WhatsApp webhooks: Twilio inbound + status callbacks, the Baileys bridge's events (docs/api.md, "Webhooks")."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator

from server.app_state import services
from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import ServiceState
from server.security import bridge_hmac
from server.whatsapp.status import PROGRESS, predecessors
from tests.conftest import TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    TWILIO_STATUS,
    WA_PREVIOUS_SECRET,
    WA_SECRET,
    bridge_message,
    customers,
    messages,
    new_message_sid,
    post_bridge,
    post_twilio,
    status_form,
    tenant,
    threads,
    twilio_form,
    wa_client,
    wa_db,
)

VECTOR = Path(__file__).resolve().parent.parent / "baileys-bridge" / "test" / "vectors" / "signature.json"


@pytest.fixture
def wa_app(make_app):
    return make_app(WA_SHARED_SECRET=WA_SECRET)


def outgoing(db, business_id: int, provider: str, provider_message_id: str, status: str = "sent") -> int:
    with db.scope() as session:
        customer = upsert_customer(session, business_id, phone=CUSTOMER)
        thread = upsert_thread(session, business_id, customer.id, "whatsapp")
        message, _ = insert_message(
            session,
            thread,
            direction="out",
            body="התור נקבע",
            provider=provider,
            provider_message_id=provider_message_id,
            status=status,
        )
        return message.id


# ---- Twilio inbound ------------------------------------------------------------------------
def test_twilio_inbound_stores_customer_thread_and_message(wa_client, wa_db, tenant):
    form = twilio_form(tenant.whatsapp)
    response = post_twilio(wa_client, TWILIO_INBOUND, form)
    assert response.status_code == 204 and response.data == b""
    [customer] = customers(wa_db, tenant.business_id)
    assert (customer.phone, customer.name) == (CUSTOMER, "דנה")
    [thread] = threads(wa_db, tenant.business_id)
    assert (thread.channel, thread.customer_id, thread.unread_count) == ("whatsapp", customer.id, 1)
    [message] = messages(wa_db)
    assert (message.direction, message.provider, message.provider_message_id, message.body, message.kind) == (
        "in",
        "twilio",
        form["MessageSid"],
        form["Body"],
        "text",
    )
    assert message.thread_id == thread.id and message.business_id == tenant.business_id


def test_twilio_inbound_replay_stores_nothing_new(wa_client, wa_db, tenant):
    form = twilio_form(tenant.whatsapp)
    assert post_twilio(wa_client, TWILIO_INBOUND, form).status_code == 204
    assert post_twilio(wa_client, TWILIO_INBOUND, form).status_code == 204
    assert len(messages(wa_db)) == 1
    assert threads(wa_db, tenant.business_id)[0].unread_count == 1


def test_twilio_inbound_media_and_location(wa_client, wa_db, tenant):
    media = twilio_form(
        tenant.whatsapp,
        body="",
        NumMedia="2",
        MessageType="image",
        MediaUrl0="https://api.twilio.com/media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/media/ME2",
        MediaContentType1="application/pdf",
    )
    location = twilio_form(
        tenant.whatsapp,
        body="",
        MessageType="location",
        Latitude="32.0853",
        Longitude="34.7818",
        Address="דיזנגוף 50, תל אביב",
        Label="הבית",
    )
    untyped = twilio_form(
        tenant.whatsapp,
        body="",
        NumMedia="1",
        MessageType="",
        MediaUrl0="https://api.twilio.com/media/ME3",
        MediaContentType0="application/pdf",
    )
    for form in (media, location, untyped):
        assert post_twilio(wa_client, TWILIO_INBOUND, form).status_code == 204
    first, second, third = messages(wa_db)
    assert (first.kind, third.kind) == ("image", "document")
    assert first.media == [
        {"url": "https://api.twilio.com/media/ME1", "content_type": "image/jpeg"},
        {"url": "https://api.twilio.com/media/ME2", "content_type": "application/pdf"},
    ]
    assert second.kind == "location"
    assert second.media == [
        {
            "type": "location",
            "latitude": "32.0853",
            "longitude": "34.7818",
            "address": "דיזנגוף 50, תל אביב",
            "label": "הבית",
        }
    ]


def test_twilio_inbound_body_with_nul_is_stored_without_it(wa_client, wa_db, tenant):
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form(tenant.whatsapp, body="a\x00b")).status_code == 204
    assert messages(wa_db)[0].body == "ab"


def test_twilio_inbound_to_an_unknown_number_answers_204_and_stores_nothing(wa_client, wa_db, tenant, caplog):
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form("+97235559999")).status_code == 204
    assert messages(wa_db) == [] and customers(wa_db, tenant.business_id) == []
    assert any(getattr(r, "event", None) == "whatsapp_unknown_number" for r in caplog.records)


def test_twilio_webhooks_refuse_a_missing_or_wrong_signature(wa_client, wa_db, tenant):
    for path in (TWILIO_INBOUND, TWILIO_STATUS):
        for signature in ("", "bm90IGEgc2lnbmF0dXJl"):
            form = twilio_form(tenant.whatsapp) if path == TWILIO_INBOUND else status_form(new_message_sid(), "sent")
            response = post_twilio(wa_client, path, form, signature=signature)
            assert response.status_code == 403 and response.json["error"] == "invalid_signature"
    assert messages(wa_db) == []


def test_twilio_signature_covers_every_parameter(wa_client, wa_db, tenant):
    form = twilio_form(tenant.whatsapp)
    signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(TEST_BASE_URL + TWILIO_INBOUND, form)
    tampered = {**form, "Body": "something else"}
    assert post_twilio(wa_client, TWILIO_INBOUND, tampered, signature=signature).status_code == 403


def test_twilio_inbound_without_message_sid_is_400(wa_client, wa_db, tenant):
    form = twilio_form(tenant.whatsapp)
    del form["MessageSid"], form["SmsSid"], form["SmsMessageSid"]
    response = post_twilio(wa_client, TWILIO_INBOUND, form)
    assert response.status_code == 400 and response.json["error"] == "invalid_webhook"


def test_status_callback_posted_to_the_inbound_url_updates_the_message(wa_client, wa_db, tenant):
    sid = new_message_sid()
    message_id = outgoing(wa_db, tenant.business_id, "twilio", sid)
    assert post_twilio(wa_client, TWILIO_INBOUND, status_form(sid, "delivered")).status_code == 204
    [message] = messages(wa_db)
    assert (message.id, message.status) == (message_id, "delivered")


# ---- Twilio status callbacks ---------------------------------------------------------------
def test_twilio_statuses_only_move_forward(wa_client, wa_db, tenant):
    sid = new_message_sid()
    outgoing(wa_db, tenant.business_id, "twilio", sid, status="sent")
    seen = []
    for status in ("sending", "delivered", "read", "delivered", "sent", "undelivered"):
        assert post_twilio(wa_client, TWILIO_STATUS, status_form(sid, status)).status_code == 204
        seen.append(messages(wa_db)[0].status)
    assert seen == ["sent", "delivered", "read", "read", "read", "read"]


def test_twilio_failure_keeps_its_error_and_a_later_delivery_wins(wa_client, wa_db, tenant):
    sid = new_message_sid()
    outgoing(wa_db, tenant.business_id, "twilio", sid)
    form = status_form(
        sid,
        "failed",
        ErrorCode="63016",
        ErrorMessage="Failed to send freeform message because you are outside the allowed window.",
    )
    assert post_twilio(wa_client, TWILIO_STATUS, form).status_code == 204
    [message] = messages(wa_db)
    assert (message.status, message.error_code) == ("failed", "63016")
    assert "outside the allowed window" in message.error_message
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(sid, "sent")).status_code == 204
    assert messages(wa_db)[0].status == "failed"
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(sid, "read")).status_code == 204
    [message] = messages(wa_db)
    assert (message.status, message.error_code, message.error_message) == ("read", None, None)


def test_unknown_twilio_status_is_ignored_and_unknown_sid_kept_for_later(wa_client, wa_db, tenant, caplog):
    sid = new_message_sid()
    outgoing(wa_db, tenant.business_id, "twilio", sid)
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(sid, "teleported")).status_code == 204
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(new_message_sid(), "delivered")).status_code == 204
    assert messages(wa_db)[0].status == "sent"
    reasons = [
        getattr(r, "reason", None) for r in caplog.records if getattr(r, "event", None) == "whatsapp_status_ignored"
    ]
    assert reasons == ["unknown status"]
    # Its message may not have the sid yet (test_whatsapp_pending_status.py).
    assert [r.status for r in caplog.records if getattr(r, "event", None) == "whatsapp_status_pending"] == ["delivered"]


def test_status_never_touches_an_inbound_message(wa_client, wa_db, tenant):
    form = twilio_form(tenant.whatsapp)
    post_twilio(wa_client, TWILIO_INBOUND, form)
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(form["MessageSid"], "read")).status_code == 204
    assert messages(wa_db)[0].status == "received"


def test_forward_only_rule():
    assert predecessors("read") == ("queued", "sent", "delivered", "failed")
    assert predecessors("sent") == ("queued",)
    assert predecessors("failed") == ("queued", "sent")
    assert all("read" not in predecessors(status) for status in PROGRESS + ("failed",))


# ---- Baileys bridge ------------------------------------------------------------------------
def test_baileys_message_is_stored_once(wa_client, wa_db, tenant):
    event = bridge_message(tenant.whatsapp)
    assert post_bridge(wa_client, event).status_code == 204
    response = post_bridge(wa_client, event)  # the bridge re-delivers after a reconnect
    assert response.status_code == 204 and response.data == b""
    [message] = messages(wa_db)
    assert (message.provider, message.provider_message_id, message.body) == (
        "baileys",
        f"{event['chat']}:{event['id']}",
        event["text"],
    )
    [customer] = customers(wa_db, tenant.business_id)
    assert (customer.phone, customer.name) == (CUSTOMER, "דנה")


def test_baileys_text_the_database_cannot_store_is_stored_without_it(wa_client, wa_db, tenant):
    # JSON may carry a NUL or a lone surrogate; the bridge's message is kept, without them.
    event = bridge_message(tenant.whatsapp, text="a\x00b\ud83d!", push_name="דנה\x00")
    assert post_bridge(wa_client, json.dumps(event).encode("ascii")).status_code == 204
    [message] = messages(wa_db)
    assert message.body == "ab\ufffd!"
    assert [c.name for c in customers(wa_db, tenant.business_id)] == ["דנה"]


def test_same_message_id_in_two_chats_is_two_messages(wa_client, wa_db, tenant):
    first = bridge_message(tenant.whatsapp, msg_id="3EB0SAMEID")
    second = bridge_message(tenant.whatsapp, msg_id="3EB0SAMEID", from_="+972507654321")
    assert post_bridge(wa_client, first).status_code == post_bridge(wa_client, second).status_code == 204
    assert len(messages(wa_db)) == 2


def test_baileys_refuses_a_missing_or_malformed_signature(wa_client, wa_db, tenant):
    for header in ("", "t=123", "v1=abc", "t=abc,v1=abc"):
        response = post_bridge(wa_client, bridge_message(tenant.whatsapp), header=header)
        assert response.status_code == 401 and response.json["error"] == "invalid_signature"
    assert messages(wa_db) == []


def test_baileys_refuses_another_secret_and_a_changed_body(wa_client, wa_db, tenant):
    event = bridge_message(tenant.whatsapp)
    assert post_bridge(wa_client, event, secret="someone-else").status_code == 401
    raw = json.dumps(event).encode()
    header = bridge_hmac.sign(WA_SECRET, raw)
    tampered = raw.replace(b"\\u05e9", b"\\u05e1", 1)
    assert tampered != raw and post_bridge(wa_client, tampered, header=header).status_code == 401
    assert messages(wa_db) == []


def test_baileys_refuses_a_stale_or_future_timestamp(wa_client, wa_db, tenant):
    for skew in (-301, 301):
        response = post_bridge(wa_client, bridge_message(tenant.whatsapp), timestamp=int(time.time()) + skew)
        assert response.status_code == 401 and "stale" in response.json["message"]
    assert messages(wa_db) == []


def test_baileys_accepts_the_previous_secret_during_rotation(make_app, tenant):
    app = make_app(WA_SHARED_SECRET="new-secret", WA_SHARED_SECRET_PREVIOUS=WA_PREVIOUS_SECRET)
    client = app.test_client()
    assert post_bridge(client, bridge_message(tenant.whatsapp), secret=WA_PREVIOUS_SECRET).status_code == 204
    raw = json.dumps(bridge_message(tenant.whatsapp)).encode()
    now = int(time.time())
    unknown_then_new = (
        bridge_hmac.sign("retired", raw, now) + "," + bridge_hmac.sign("new-secret", raw, now).split(",")[1]
    )
    assert post_bridge(client, raw, header=unknown_then_new).status_code == 204
    assert post_bridge(client, bridge_message(tenant.whatsapp), secret="retired").status_code == 401


def test_baileys_webhook_without_a_shared_secret_is_501(client, tenant):
    response = post_bridge(client, bridge_message(tenant.whatsapp))
    assert response.status_code == 501 and response.json["error"] == "not_configured"


def test_shared_signature_vector_verifies_in_python():
    vector = json.loads(VECTOR.read_text())
    body = vector["body"].encode("utf-8")
    at = vector["timestamp"]
    assert bridge_hmac.sign(vector["secret"], body, at) == vector["header"]
    assert bridge_hmac.verify([vector["secret"]], body, vector["header"], now=at) is None
    assert bridge_hmac.verify([vector["previous_secret"]], body, vector["rotation_header"], now=at) is None
    assert bridge_hmac.verify([vector["secret"]], body, vector["header"], now=at + 301) == "stale timestamp"
    assert bridge_hmac.verify([vector["previous_secret"]], body, vector["header"], now=at) is not None


def test_shared_vector_body_is_a_valid_message_event(make_app, db):
    vector = json.loads(VECTOR.read_text())
    event = json.loads(vector["body"])
    tenant = create_tenant(db, whatsapp=event["to"], phone="+97235550777")
    client = make_app(WA_SHARED_SECRET=vector["secret"]).test_client()
    assert post_bridge(client, vector["body"].encode("utf-8"), secret=vector["secret"]).status_code == 204
    [message] = messages(db)
    assert message.body == event["text"] and message.business_id == tenant.business_id


BAD_BRIDGE_PAYLOADS = [
    b"not json",
    b"[]",
    b'{"event": "typing"}',
    b'{"id": "x"}',
    b'{"event": "message", "id": "X", "chat": "c@s.whatsapp.net", "from": "+972501234567", "to": "+97235550002"}',
    b'{"event": "message", "id": "X", "chat": "c", "from": null, "lid": null, "text": "hi", "to": "+97235550002"}',
    b'{"event": "message", "id": "X", "chat": "c", "from": "not a phone", "text": "hi", "to": "+97235550002"}',
    b'{"event": "message", "id": "X", "chat": "c", "lid": "12345", "text": "hi", "to": "+97235550002"}',
    b'{"event": "message", "id": 7, "chat": "c", "from": "+972501234567", "text": "hi", "to": "+97235550002"}',
    b'{"event": "message", "id": "X", "chat": "c", "from": "+972501234567", "text": "hi", "to": null}',
    b'{"event": "message", "id": "X", "chat": "c", "from": "+972501234567", "text": "hi", "to": "+97235550002",'
    b' "timestamp": "yesterday"}',
    b'{"event": "status", "status": "read"}',
    b'{"event": "status", "id": "X", "status": 3}',
    b'{"event": "connection"}',
    b'{"event": "connection", "state": "open", "qr": "yes"}',
]


def test_baileys_bad_payloads_are_400_never_500(wa_client, wa_db, tenant):
    for body in BAD_BRIDGE_PAYLOADS:
        response = post_bridge(wa_client, body)
        assert (response.status_code, response.json["error"]) == (400, "invalid_event"), body
    assert messages(wa_db) == []


def test_baileys_message_to_an_unknown_number_is_204_and_not_stored(wa_client, wa_db, tenant):
    assert post_bridge(wa_client, bridge_message("+97235559999")).status_code == 204
    assert messages(wa_db) == []


def test_lid_only_customer_gets_the_phone_when_it_arrives(wa_client, wa_db, tenant):
    lid = "140913951141911@lid"
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, from_=None, lid=lid)).status_code == 204
    [customer] = customers(wa_db, tenant.business_id)
    assert (customer.phone, customer.wa_lid) == (None, lid)
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, from_=CUSTOMER, lid=lid)).status_code == 204
    [customer] = customers(wa_db, tenant.business_id)
    assert (customer.phone, customer.wa_lid) == (CUSTOMER, lid)
    [thread] = threads(wa_db, tenant.business_id)
    assert [m.thread_id for m in messages(wa_db)] == [thread.id, thread.id]


def test_lid_customer_is_merged_into_the_customer_with_the_phone(wa_client, wa_db, tenant):
    lid = "140913951141911@lid"
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form(tenant.whatsapp)).status_code == 204
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, from_=None, lid=lid)).status_code == 204
    by_phone, by_lid = customers(wa_db, tenant.business_id)
    assert (by_phone.phone, by_lid.phone, by_lid.wa_lid) == (CUSTOMER, None, lid)
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, from_=CUSTOMER, lid=lid)).status_code == 204
    by_phone, retired = customers(wa_db, tenant.business_id)
    assert (by_phone.wa_lid, retired.merged_into_id, retired.wa_lid) == (lid, by_phone.id, None)
    [thread] = threads(wa_db, tenant.business_id)
    assert thread.customer_id == by_phone.id
    stored = messages(wa_db)
    assert len(stored) == 3 and {m.thread_id for m in stored} == {thread.id}


def test_baileys_status_moves_outgoing_messages_forward_only(wa_client, wa_db, tenant):
    outgoing(wa_db, tenant.business_id, "baileys", "3EB0OUT1")
    for status, expected in (
        ("delivered", "delivered"),
        ("sent", "delivered"),
        ("read", "read"),
        ("failed", "read"),
        ("gone", "read"),
    ):
        response = post_bridge(wa_client, {"event": "status", "id": "3EB0OUT1", "status": status})
        assert response.status_code == 204
        assert messages(wa_db)[0].status == expected
    assert post_bridge(wa_client, {"event": "status", "id": "3EB0NOPE", "status": "read"}).status_code == 204


def test_connection_events_are_shared_state_and_shown_by_readyz(make_app, tenant):
    app = make_app(WA_SHARED_SECRET=WA_SECRET, ENABLE_WA_BAILEYS="true")
    client = app.test_client()
    assert client.get("/readyz").json["whatsapp_baileys_state"] == "unknown"
    assert post_bridge(client, {"event": "connection", "state": "connecting", "qr": True}).status_code == 204
    assert client.get("/readyz").json["whatsapp_baileys_state"] == "connecting"
    assert post_bridge(client, {"event": "connection", "state": "open", "qr": False}).status_code == 204
    body = client.get("/readyz")
    assert body.status_code == 200 and body.json["whatsapp_baileys_state"] == "open"
    with services(app).database.scope() as session:
        assert session.get(ServiceState, "baileys_bridge").value["state"] == "open"


def test_readyz_says_disabled_without_baileys(client):
    assert client.get("/readyz").json["whatsapp_baileys_state"] == "disabled"
