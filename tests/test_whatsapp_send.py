"""`POST /api/whatsapp/send` and `send_whatsapp()`: validation, provider routing, fallback, the 24-hour
window, storage of the outgoing message and `Idempotency-Key` (docs/api.md, "WhatsApp")."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import Message, utcnow
from server.errors import DomainError, Problem
from server.security import bridge_hmac
from server.whatsapp.send import SendResult, send_whatsapp
from testkit.servers import free_port
from tests.conftest import TEST_BASE_URL, add_user, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    SEND,
    TWILIO_INBOUND,
    TWILIO_SENDER,
    bridge,
    bridge_server,
    messages,
    post_bridge,
    post_twilio,
    tenant,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
)


@pytest.fixture
def wa_app(make_app, wa_env):
    return make_app(**wa_env())


def send(client, tenant, body, **headers):
    return client.post(SEND, json=body, headers={**tenant.headers, **headers})


def bridge_reports(client, state: str) -> None:
    assert post_bridge(client, {"event": "connection", "state": state, "qr": False}).status_code == 204


def customer_wrote_via_twilio(client, tenant) -> None:
    assert post_twilio(client, TWILIO_INBOUND, twilio_form(tenant.whatsapp)).status_code == 204


# ---- validation ----------------------------------------------------------------------------
def test_send_needs_a_token(wa_client, bridge):
    assert wa_client.post(SEND, json={"to": CUSTOMER, "text": "hi"}).status_code == 401
    assert (
        wa_client.post(SEND, json={"to": CUSTOMER, "text": "hi"}, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert bridge.sends == []


def test_bad_requests_are_400_and_send_nothing(wa_client, wa_db, tenant, bridge, twilio_api):
    # A missing, empty or wrong-typed field is `invalid_field` naming it; other mistakes have their own code.
    cases = [
        ({"text": "hi"}, "invalid_field", "to"),
        ({"to": CUSTOMER}, "invalid_field", "text"),
        ({"to": CUSTOMER, "text": "  "}, "invalid_field", "text"),
        ({"to": "", "text": "hi"}, "invalid_field", "to"),
        ({"to": 972501234567, "text": "hi"}, "invalid_field", "to"),
        ({"to": CUSTOMER, "text": ["hi"]}, "invalid_field", "text"),
        ({"to": CUSTOMER, "text": "hi", "provider": ["twilio"]}, "invalid_field", "provider"),
        ({"to": CUSTOMER, "content_sid": "  "}, "invalid_field", "content_sid"),
        ({"to": CUSTOMER, "content_sid": 7}, "invalid_field", "content_sid"),
        ({"to": CUSTOMER, "text": "a\x00b"}, "invalid_field", "text"),
        ({"to": "hello", "text": "hi"}, "invalid_to", "to"),
        ({"to": "whatsapp:+12", "text": "hi"}, "invalid_to", "to"),
        ({"to": CUSTOMER, "text": "hi", "provider": "sms"}, "invalid_provider", "provider"),
        ({"to": CUSTOMER, "text": "x" * 4097}, "text_too_long", "text"),
        (
            {"to": CUSTOMER, "content_sid": "HX1", "content_variables": "[1]"},
            "invalid_content_variables",
            "content_variables",
        ),
        ({"to": CUSTOMER, "content_sid": "HX1", "content_variables": 5}, "invalid_field", "content_variables"),
        ({"to": CUSTOMER, "content_sid": "HX1", "provider": "baileys"}, "unsupported_by_provider", "provider"),
        ({"to": "140913951141911@lid", "text": "hi", "provider": "twilio"}, "unsupported_by_provider", "provider"),
    ]
    for body, error, field in cases:
        response = send(wa_client, tenant, body)
        assert (response.status_code, response.json["error"], response.json["field"], response.json["success"]) == (
            400,
            error,
            field,
            False,
        ), body
    lone_surrogate = wa_client.post(
        SEND,
        data=json.dumps({"to": CUSTOMER, "text": "\ud800"}),  # ASCII-escaped
        content_type="application/json",
        headers=tenant.headers,
    )
    assert (lone_surrogate.status_code, lone_surrogate.json["error"], lone_surrogate.json["field"]) == (
        400,
        "invalid_field",
        "text",
    )
    assert wa_client.post(SEND, data="{", headers=tenant.headers).status_code == 400
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}, **{"Idempotency-Key": "k" * 129})
    assert (response.status_code, response.json["error"]) == (400, "invalid_idempotency_key")
    assert messages(wa_db) == [] and bridge.sends == [] and twilio_api.requests == []


def test_disabled_providers_answer_501(make_app, tenant, wa_env):
    client = make_app(**wa_env(ENABLE_WA_TWILIO="false", ENABLE_WA_BAILEYS="false")).test_client()
    for provider in ("twilio", "baileys", "auto"):
        response = send(client, tenant, {"to": CUSTOMER, "text": "hi", "provider": provider})
        assert response.status_code == 501 and response.json["success"] is False, provider
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).json["error"] == "whatsapp_not_configured"


# ---- sending through each provider ----------------------------------------------------------
def test_send_through_baileys(wa_client, wa_db, tenant, bridge):
    response = send(
        wa_client, tenant, {"to": "whatsapp:" + CUSTOMER, "message": "התור שלך מחר ב-10:00", "provider": "baileys"}
    )
    assert response.status_code == 200
    [sent] = bridge.accepted
    assert response.json == {
        "success": True,
        "provider": "baileys",
        "message_id": response.json["message_id"],
        "provider_message_id": bridge._message_id(sent.body["idempotency_key"]),
    }
    assert sent.body == {
        "business_id": tenant.business_id,  # sent through the business's own instance
        "to": CUSTOMER,
        "text": "התור שלך מחר ב-10:00",
        "idempotency_key": f"wa-message-{response.json['message_id']}",
    }
    [message] = messages(wa_db)
    assert (message.id, message.direction, message.provider, message.status, message.sender_user_id, message.body) == (
        response.json["message_id"],
        "out",
        "baileys",
        "sent",
        tenant.user_id,
        "התור שלך מחר ב-10:00",
    )
    assert message.provider_message_id == response.json["provider_message_id"]


def test_send_through_twilio(wa_client, wa_db, tenant, twilio_api):
    customer_wrote_via_twilio(wa_client, tenant)
    response = send(wa_client, tenant, {"to": "050-123-4567", "text": "שלום!", "provider": "twilio"})
    assert response.status_code == 200, response.json
    [request] = twilio_api.requests_for("Messages")
    assert request.auth_user == twilio_api.account_sid
    assert request.form == {
        "To": f"whatsapp:{CUSTOMER}",
        "From": f"whatsapp:{tenant.whatsapp}",  # the business's own number (TWILIO_WA_FROM is the default)
        "Body": "שלום!",
        "StatusCallback": f"{TEST_BASE_URL}/webhook/whatsapp/twilio/status",
    }
    assert response.json["provider_message_id"] in twilio_api.messages
    [message] = messages(wa_db, direction="out")
    assert (message.provider, message.provider_message_id, message.status) == (
        "twilio",
        response.json["provider_message_id"],
        "sent",
    )


def test_template_goes_out_as_content_sid_without_body(wa_client, wa_db, tenant, twilio_api):
    response = send(
        wa_client,
        tenant,
        {
            "to": CUSTOMER,
            "content_sid": "HXb5b62575e6e4ff6129ad7c8efe1f983e",
            "content_variables": {"1": "דנה", "2": "10:00"},
        },
    )
    assert response.status_code == 200 and response.json["provider"] == "twilio"
    [request] = twilio_api.requests_for("Messages")
    assert "Body" not in request.form
    assert request.form["ContentSid"] == "HXb5b62575e6e4ff6129ad7c8efe1f983e"
    assert json.loads(request.form["ContentVariables"]) == {"1": "דנה", "2": "10:00"}
    [message] = messages(wa_db)
    assert (message.kind, message.body) == ("template", "[template HXb5b62575e6e4ff6129ad7c8efe1f983e]")


def test_a_lid_only_customer_is_reached_through_baileys(wa_client, wa_db, tenant, bridge):
    response = send(wa_client, tenant, {"to": "140913951141911@lid", "text": "hi"})
    assert response.status_code == 200 and response.json["provider"] == "baileys"
    assert bridge.accepted[0].body["to"] == "140913951141911@lid"


def test_the_bridge_checks_the_apps_signature_also_during_rotation(make_app, tenant, wa_env, bridge):
    client = make_app(**wa_env(WA_SHARED_SECRET="brand-new", WA_SHARED_SECRET_PREVIOUS=bridge.secrets[0])).test_client()
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi", "provider": "baileys"}).status_code == 200
    [sent] = bridge.sends
    assert sent.signature_ok and sent.headers[bridge_hmac.HEADER].count("v2=") == 2


# ---- routing and fallback -------------------------------------------------------------------
def test_auto_follows_the_priority(make_app, tenant, wa_env, bridge, twilio_api):
    client = make_app(**wa_env(WA_PROVIDER_PRIORITY="twilio,baileys")).test_client()
    customer_wrote_via_twilio(client, tenant)
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).json["provider"] == "twilio"
    client = make_app(**wa_env(WA_PROVIDER_PRIORITY="baileys,twilio")).test_client()
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).json["provider"] == "baileys"
    assert len(bridge.accepted) == 1 and len(twilio_api.requests_for("Messages")) == 1


def test_auto_skips_baileys_while_the_bridge_is_not_connected(wa_client, tenant, bridge, twilio_api):
    customer_wrote_via_twilio(wa_client, tenant)
    bridge_reports(wa_client, "close")
    assert send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}).json["provider"] == "twilio"
    assert bridge.sends == []
    bridge_reports(wa_client, "open")
    assert send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}).json["provider"] == "baileys"


def test_falls_back_when_the_bridge_is_not_connected(wa_client, wa_db, tenant, bridge, twilio_api):
    customer_wrote_via_twilio(wa_client, tenant)
    bridge.mode = "not_connected"
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert response.status_code == 200 and response.json["provider"] == "twilio"
    assert len(bridge.accepted) == 1 and len(twilio_api.requests_for("Messages")) == 1
    [message] = messages(wa_db, direction="out")
    assert (message.provider, message.status, message.error_code) == ("twilio", "sent", None)


def test_falls_back_when_the_bridge_refuses_connections(make_app, tenant, wa_env, twilio_api):
    client = make_app(**wa_env(WA_BAILEYS_URL=f"http://127.0.0.1:{free_port()}")).test_client()
    customer_wrote_via_twilio(client, tenant)
    response = send(client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert response.status_code == 200 and response.json["provider"] == "twilio"


def test_falls_back_when_twilio_rejects_the_request(make_app, tenant, wa_env, bridge, twilio_api):
    client = make_app(**wa_env(WA_PROVIDER_PRIORITY="twilio,baileys")).test_client()
    customer_wrote_via_twilio(client, tenant)
    twilio_api.fail("Messages", code=21211, status=400)
    response = send(client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert response.status_code == 200 and response.json["provider"] == "baileys"
    assert len(twilio_api.requests_for("Messages")) == 1 and len(bridge.accepted) == 1


def test_no_fallback_after_a_bridge_timeout(wa_client, wa_db, tenant, bridge, twilio_api):
    customer_wrote_via_twilio(wa_client, tenant)
    bridge.mode = "stall"
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"})
    bridge.release()
    assert response.status_code == 502
    assert response.json["success"] is False and response.json["error"] == "outcome_unknown"
    assert twilio_api.requests_for("Messages") == []  # the customer must not get it twice
    [message] = messages(wa_db, direction="out")
    assert (message.provider, message.status, message.error_code) == ("baileys", "failed", "timeout")
    assert response.json["message_id"] == message.id


def test_no_fallback_after_a_twilio_timeout_or_5xx(make_app, tenant, wa_env, bridge, twilio_api):
    client = make_app(**wa_env(WA_PROVIDER_PRIORITY="twilio,baileys")).test_client()
    customer_wrote_via_twilio(client, tenant)
    twilio_api.stall("Messages", seconds=3, times=1)
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).json["error"] == "outcome_unknown"
    twilio_api.fail("Messages", code=20500, status=500, times=1)
    response = send(client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert (response.status_code, response.json["error"]) == (502, "outcome_unknown")
    assert bridge.sends == []


def test_no_fallback_when_the_bridge_may_have_sent(wa_client, tenant, bridge, twilio_api):
    customer_wrote_via_twilio(wa_client, tenant)
    bridge.mode = "error"
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert (response.status_code, response.json["error"]) == (502, "outcome_unknown")
    assert twilio_api.requests_for("Messages") == []


def test_a_failed_send_is_stored_as_failed(wa_client, wa_db, tenant, bridge):
    bridge.mode = "not_connected"
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi", "provider": "baileys"})
    assert (response.status_code, response.json["error"]) == (502, "send_failed")
    [message] = messages(wa_db)
    assert (message.status, message.error_code, message.sender_user_id) == ("failed", "not_connected", tenant.user_id)


# ---- the 24-hour window ----------------------------------------------------------------------
def test_twilio_free_form_needs_the_24_hour_window(make_app, tenant, wa_env, twilio_api):
    client = make_app(**wa_env(ENABLE_WA_BAILEYS="false")).test_client()
    db = services(client.application).database
    response = send(client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert (response.status_code, response.json["error"]) == (422, "template_required")
    customer_wrote_via_twilio(client, tenant)
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).status_code == 200
    with db.scope() as session:  # the customer's message is now 25 hours old
        session.execute(
            sa.update(Message).where(Message.direction == "in").values(created_at=utcnow() - timedelta(hours=25))
        )
    assert send(client, tenant, {"to": CUSTOMER, "text": "hi"}).status_code == 422
    assert send(client, tenant, {"to": CUSTOMER, "content_sid": "HX123"}).status_code == 200
    assert len(twilio_api.requests_for("Messages")) == 2


def test_a_message_to_the_bridge_number_does_not_open_the_twilio_window(wa_client, tenant, bridge, twilio_api):
    assert (
        post_bridge(
            wa_client,
            {
                "event": "message",
                "id": "3EB0A",
                "chat": "972501234567@s.whatsapp.net",
                "from": CUSTOMER,
                "lid": None,
                "push_name": "",
                "text": "hi",
                "timestamp": 0,
                "to": tenant.whatsapp,
            },
        ).status_code
        == 204
    )
    bridge_reports(wa_client, "close")
    response = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert (response.status_code, response.json["error"]) == (422, "template_required")
    assert "baileys" in response.json["message"] and "24-hour" in response.json["message"]


def test_no_provider_available_is_503(make_app, tenant, wa_env):
    client = make_app(**wa_env(ENABLE_WA_TWILIO="false")).test_client()
    bridge_reports(client, "logged_out")
    response = send(client, tenant, {"to": CUSTOMER, "text": "hi"})
    assert (response.status_code, response.json["error"]) == (503, "no_provider_available")


# ---- Idempotency-Key -------------------------------------------------------------------------
def test_same_idempotency_key_answers_the_same_result_and_sends_once(wa_client, wa_db, tenant, bridge):
    body, key = {"to": CUSTOMER, "text": "hi"}, {"Idempotency-Key": "reply-42"}
    first = send(wa_client, tenant, body, **key)
    second = send(wa_client, tenant, body, **key)
    assert first.status_code == second.status_code == 200 and first.json == second.json
    assert len(bridge.sends) == 1 and len(messages(wa_db)) == 1
    other = send(wa_client, tenant, {"to": CUSTOMER, "text": "something else"}, **key)
    assert (other.status_code, other.json["error"]) == (422, "idempotency_key_reused")


def test_a_failed_result_is_replayed_too(wa_client, wa_db, tenant, bridge):
    bridge.mode = "stall"
    body, key = {"to": CUSTOMER, "text": "hi", "provider": "baileys"}, {"Idempotency-Key": "k1"}
    first = send(wa_client, tenant, body, **key)
    bridge.release()
    bridge.mode = "ok"
    second = send(wa_client, tenant, body, **key)
    assert first.status_code == second.status_code == 502 and first.json == second.json
    assert len(bridge.sends) == 1


def test_idempotency_keys_are_per_business(wa_client, wa_db, tenant, other_tenant, bridge):
    key = {"Idempotency-Key": "same-key"}
    assert send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}, **key).status_code == 200
    assert send(wa_client, other_tenant, {"to": CUSTOMER, "text": "hi"}, **key).status_code == 200
    assert len(bridge.sends) == 2


def test_concurrent_duplicates_send_once(wa_client, wa_db, tenant, bridge):
    bridge.mode = "stall"
    barrier = threading.Barrier(6)
    responses = []

    def post():
        barrier.wait()
        responses.append(send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}, **{"Idempotency-Key": "race"}))

    workers = [threading.Thread(target=post) for _ in range(6)]
    for worker in workers:
        worker.start()
    threading.Timer(0.5, bridge.release).start()
    for worker in workers:
        worker.join(10)
    codes = sorted(r.status_code for r in responses)
    assert len(codes) == 6 and codes.count(200) >= 1 and set(codes) <= {200, 409}, codes
    assert all(r.json["error"] == "idempotency_key_in_use" for r in responses if r.status_code == 409)
    assert len({r.json["message_id"] for r in responses if r.status_code == 200}) == 1
    assert len(bridge.sends) == 1 and len(messages(wa_db)) == 1
    again = send(wa_client, tenant, {"to": CUSTOMER, "text": "hi"}, **{"Idempotency-Key": "race"})
    assert again.status_code == 200 and len(bridge.sends) == 1


# ---- the service called directly (CRM staff replies, AI replies) -----------------------------
def test_send_whatsapp_for_other_areas(wa_app, wa_db, tenant, bridge):
    agent = add_user(wa_db, tenant.business_id, "agent")
    with wa_db.scope() as session:
        result = send_whatsapp(
            session,
            wa_app.config["SETTINGS"],
            tenant.business_id,
            to="0501234567",
            text="hi",
            sender_user_id=agent.user_id,
            idempotency_key="crm-1",
        )
    assert isinstance(result, SendResult) and result.provider == "baileys"
    [message] = messages(wa_db)
    assert (message.id, message.status, message.sender_user_id) == (result.message_id, "sent", agent.user_id)
    with wa_db.scope() as session, pytest.raises(DomainError) as refused:
        send_whatsapp(session, wa_app.config["SETTINGS"], tenant.business_id, to="nope", text="hi")
    assert (refused.value.problem, refused.value.code, refused.value.field) == (Problem.INVALID, "invalid_to", "to")
    bridge.mode = "error"
    with wa_db.scope() as session, pytest.raises(DomainError) as failed:
        send_whatsapp(session, wa_app.config["SETTINGS"], tenant.business_id, to="0501234567", text="again")
    # A failed send is an error too, and its message is stored (committed) as failed all the same.
    assert (failed.value.problem, failed.value.code) == (Problem.UPSTREAM_FAILED, "outcome_unknown")
    assert failed.value.details["provider"] == "baileys"
    assert [(m.id, m.status) for m in messages(wa_db)][1:] == [(failed.value.details["message_id"], "failed")]


def test_outgoing_messages_land_in_the_right_business(wa_client, wa_db, tenant, bridge):
    second = create_tenant(wa_db, name="Garage", phone="+97235550201", whatsapp="+97235550202")
    send(wa_client, tenant, {"to": CUSTOMER, "text": "a"})
    send(wa_client, second, {"to": CUSTOMER, "text": "b"})
    assert [(m.business_id, m.body) for m in messages(wa_db)] == [(tenant.business_id, "a"), (second.business_id, "b")]
