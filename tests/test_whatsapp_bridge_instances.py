"""Many businesses on one Baileys bridge, the app's side: every bridge event is stored under the
business its instance belongs to (`business_id`), never another; sends go out through the sending
business's own instance; admins add, log out and remove instances (admin API and CLI)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os

import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import AuditLog, Message, ServiceState
from server.whatsapp.bridge_state import bridge_state, record_bridge_state
from tests.conftest import create_tenant
from tests.test_whatsapp_support import (  # noqa: F401 (fixtures)
    BAILEYS,
    CUSTOMER,
    WA_SECRET,
    bridge,
    bridge_server,
    messages,
    post_bridge,
    threads,
    twilio_api,
    twilio_server,
    wa_env,
)


def bridge_message(business_id, to: str, msg_id: str, text: str = "שלום") -> dict:
    return {
        "event": "message",
        "business_id": business_id,
        "id": msg_id,
        "chat": CUSTOMER[1:] + "@s.whatsapp.net",
        "from": CUSTOMER,
        "lid": None,
        "push_name": "דנה",
        "text": text,
        "timestamp": 1767225590,
        "to": to,
    }


@pytest.fixture
def wa_app(make_app, wa_env):  # noqa: F811
    return make_app(**wa_env(WA_PROVIDER_PRIORITY="baileys"))


@pytest.fixture
def two(wa_app):
    db = services(wa_app).database
    salon = create_tenant(db)
    garage = create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102", email="g@x.test")
    return db, salon, garage


# ---- inbound: routed by the instance's business ----------------------------------------------------


def test_a_message_is_stored_under_the_business_its_instance_belongs_to(wa_app, two):
    db, salon, garage = two
    client = wa_app.test_client()
    # The garage's account wrote to a number the salon owns: the instance decides, not the number.
    assert post_bridge(client, bridge_message(garage.business_id, salon.whatsapp, "3EB0GARAGE1")).status_code == 204
    assert post_bridge(client, bridge_message(salon.business_id, "+972500000101", "3EB0SALON1")).status_code == 204
    [to_garage] = messages(db, provider_message_id=f"{CUSTOMER[1:]}@s.whatsapp.net:3EB0GARAGE1")
    [to_salon] = messages(db, provider_message_id=f"{CUSTOMER[1:]}@s.whatsapp.net:3EB0SALON1")
    assert [t.id for t in threads(db, garage.business_id)] == [to_garage.thread_id]
    assert [t.id for t in threads(db, salon.business_id)] == [to_salon.thread_id]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_event_for_an_unknown_business_is_404_logged_and_nothing_is_stored(wa_app, two):
    db, salon, _ = two
    client = wa_app.test_client()
    missing = 10**9
    seen = _Records()
    logging.getLogger("agentlocator.whatsapp").addHandler(seen)
    try:
        response = post_bridge(client, bridge_message(missing, salon.whatsapp, "3EB0NOBODY"))
    finally:
        logging.getLogger("agentlocator.whatsapp").removeHandler(seen)
    assert response.status_code == 404 and response.json["error"] == "unknown_business"
    assert messages(db, provider="baileys") == []
    [logged] = [r for r in seen.records if getattr(r, "event", None) == "bridge_event_unknown_business"]
    assert logged.levelno == logging.WARNING and logged.__dict__["business_id"] == missing
    connection = {"event": "connection", "business_id": missing, "state": "open", "qr": False}
    assert post_bridge(client, connection).status_code == 404
    with db.scope() as session:
        assert session.get(ServiceState, f"baileys_bridge:{missing}") is None


@pytest.mark.parametrize("business_id", ["1", True, 0, -4, 1.5, [1], 2**70])
def test_a_malformed_business_id_is_400(wa_app, two, business_id):
    db, salon, _ = two
    response = post_bridge(wa_app.test_client(), bridge_message(business_id, salon.whatsapp, "3EB0BAD"))
    assert response.status_code == 400 and response.json["error"] == "invalid_event"
    assert messages(db, provider="baileys") == []


def test_connection_states_are_kept_per_business(wa_app, two):
    db, salon, garage = two
    client = wa_app.test_client()
    for business, state in ((salon, "open"), (garage, "logged_out")):
        event = {"event": "connection", "business_id": business.business_id, "state": state, "qr": False}
        assert post_bridge(client, event).status_code == 204
    with db.scope() as session:
        assert bridge_state(session, salon.business_id) == "open"
        assert bridge_state(session, garage.business_id) == "logged_out"
    ready = client.get("/readyz").json
    assert ready["whatsapp_baileys_state"] == "logged_out" and ready["whatsapp_baileys_open"] == "1/2"


def test_a_delivery_report_from_one_instance_never_moves_another_business_message(wa_app, two):
    db, salon, garage = two
    with db.scope() as session:
        customer = upsert_customer(session, garage.business_id, phone=CUSTOMER)
        thread = upsert_thread(session, garage.business_id, customer.id, "whatsapp")
        sent, _ = insert_message(
            session, thread, direction="out", body="x", provider="baileys", provider_message_id="3EB0GARAGEOUT"
        )
        sent.status = "sent"
        message_id = sent.id
    client = wa_app.test_client()
    report = {"event": "status", "business_id": salon.business_id, "id": "3EB0GARAGEOUT", "status": "read"}
    assert post_bridge(client, report).status_code == 204  # dropped (logged): the bridge need not retry
    with db.scope() as session:
        assert session.get(Message, message_id).status == "sent"
    assert post_bridge(client, {**report, "business_id": garage.business_id}).status_code == 204
    with db.scope() as session:
        assert session.get(Message, message_id).status == "read"


def test_the_signature_still_comes_first(wa_app, two):
    _, salon, _ = two
    forged = post_bridge(wa_app.test_client(), bridge_message(salon.business_id, salon.whatsapp, "X"), secret="nope")
    assert forged.status_code == 401


# ---- outbound: through the business's own instance ------------------------------------------------


def test_a_send_names_its_business_and_follows_that_instance_state(wa_app, two, bridge):  # noqa: F811
    db, salon, garage = two
    client = wa_app.test_client()
    with db.scope() as session:
        record_bridge_state(session, salon.business_id, "open", False)
        record_bridge_state(session, garage.business_id, "logged_out", False)
    sent = client.post("/api/whatsapp/send", json={"to": CUSTOMER, "text": "תורך אושר"}, headers=salon.headers)
    assert sent.status_code == 200, sent.json
    assert bridge.accepted[-1].body["business_id"] == salon.business_id
    # The garage's account is logged out: auto routing skips the bridge for the garage alone.
    refused = client.post("/api/whatsapp/send", json={"to": CUSTOMER, "text": "שלום"}, headers=garage.headers)
    assert refused.status_code == 503 and "logged_out" in refused.json["message"]
    assert [s.body["business_id"] for s in bridge.accepted] == [salon.business_id]


def test_a_business_without_an_instance_is_not_sent_through_another(wa_app, two, bridge):  # noqa: F811
    _, salon, _ = two
    bridge.strict = True  # the bridge runs no instance for the salon
    response = wa_app.test_client().post(
        "/api/whatsapp/send", json={"to": CUSTOMER, "text": "x", "provider": "baileys"}, headers=salon.headers
    )
    assert response.status_code == 502 and response.json["success"] is False
    assert bridge.sends[-1].body["business_id"] == salon.business_id


# ---- admin: add, log out, remove ----------------------------------------------------------------


@pytest.fixture
def admin(wa_app):
    db = services(wa_app).database
    return create_tenant(
        db, name="Support", phone="+97235559991", whatsapp="+97235559992", role="admin", email="support@x.test"
    )


def _audits(db, business_id):
    with db.scope() as session:
        rows = session.scalars(sa.select(AuditLog).where(AuditLog.business_id == business_id).order_by(AuditLog.id))
        return [row.action for row in rows if row.action.startswith("whatsapp.")]


def test_admins_add_log_out_and_remove_instances(wa_app, two, admin, bridge):  # noqa: F811
    db, salon, garage = two
    client = wa_app.test_client()
    url = f"/api/admin/businesses/{salon.business_id}/whatsapp/instance"
    added = client.post(url, headers=admin.headers)
    assert added.status_code == 200
    assert added.json == {"business_id": salon.business_id, "state": "connecting", "me": None, "qr_available": True}
    assert client.post(url, headers=admin.headers).status_code == 200  # idempotent
    listed = client.get("/api/admin/whatsapp/instances", headers=admin.headers).json["items"]
    assert [i["business_id"] for i in listed] == [salon.business_id]

    bridge.instances[salon.business_id].update(state="open", qr=None, me="+972500000101")
    logged_out = client.post(url + "/logout", headers=admin.headers)
    assert logged_out.status_code == 200 and logged_out.json["qr_available"] is True
    with db.scope() as session:
        assert bridge_state(session, salon.business_id) == "logged_out"

    assert client.delete(url, headers=admin.headers).json == {"business_id": salon.business_id, "removed": True}
    assert salon.business_id not in bridge.instances
    assert client.delete(url, headers=admin.headers).status_code == 404
    assert _audits(db, salon.business_id) == [
        "whatsapp.instance_added",
        "whatsapp.instance_logged_out",
        "whatsapp.instance_removed",
    ]
    assert all(verdict for _, _, verdict in bridge.admin_requests), "every admin request was signed"
    assert _audits(db, garage.business_id) == []


def test_admin_instance_errors(wa_app, two, admin, make_app, wa_env):  # noqa: F811
    _, salon, _ = two
    client = wa_app.test_client()
    unknown = client.post(f"/api/admin/businesses/{salon.business_id}/whatsapp/instance/logout", headers=admin.headers)
    assert unknown.status_code == 404 and unknown.json["error"] == "unknown_instance"
    nobody = client.post("/api/admin/businesses/999999/whatsapp/instance", headers=admin.headers)
    assert nobody.status_code == 404 and nobody.json["error"] == "not_found"
    owner = client.post(f"/api/admin/businesses/{salon.business_id}/whatsapp/instance", headers=salon.headers)
    assert owner.status_code == 403
    silent = make_app(**wa_env(WA_BAILEYS_URL="http://127.0.0.1:9"))  # nothing listens there
    down = silent.test_client().post(
        f"/api/admin/businesses/{salon.business_id}/whatsapp/instance", headers=admin.headers
    )
    assert down.status_code == 503 and down.json["error"] == "bridge_unavailable"


def test_the_cli_adds_lists_and_removes(wa_app, two, bridge):  # noqa: F811
    _, salon, _ = two
    runner = wa_app.test_cli_runner()
    added = runner.invoke(args=["whatsapp-instance", "add", "--business-id", str(salon.business_id)])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["business_id"] == salon.business_id
    listed = runner.invoke(args=["whatsapp-instance", "list"])
    assert [i["business_id"] for i in json.loads(listed.output)["items"]] == [salon.business_id]
    assert runner.invoke(args=["whatsapp-instance", "remove"]).exit_code != 0  # needs --business-id
    removed = runner.invoke(args=["whatsapp-instance", "remove", "--business-id", str(salon.business_id)])
    assert json.loads(removed.output) == {"business_id": salon.business_id, "removed": True}
    again = runner.invoke(args=["whatsapp-instance", "logout", "--business-id", str(salon.business_id)])
    assert again.exit_code == 1 and "unknown_instance" in again.output


# ---- the webhook's body limit: media come base64 inside the event ---------------------------------


def _media_event(business_id: int, to: str, msg_id: str, data: bytes) -> dict:
    event = bridge_message(business_id, to, msg_id, text="")
    event["media"] = {
        "kind": "document",
        "mimetype": "application/pdf",
        "voice_note": False,
        "seconds": None,
        "file_name": "big.pdf",
        "caption": None,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": base64.b64encode(data).decode("ascii"),
    }
    return event


def test_an_event_with_media_over_max_content_length_is_taken(make_app, wa_env):  # noqa: F811
    # MAX_CONTENT_LENGTH stays 1 MiB for everything else; the bridge's events may carry a whole file.
    app = make_app(**wa_env(MEDIA_MAX_BYTES=str(3 * 1024 * 1024)))
    db = services(app).database
    salon = create_tenant(db)
    pdf = b"%PDF-1.7\n" + os.urandom(2 * 1024 * 1024)
    response = post_bridge(app.test_client(), _media_event(salon.business_id, salon.whatsapp, "3EB0BIGPDF", pdf))
    assert response.status_code == 204
    [stored] = messages(db, provider_message_id=f"{CUSTOMER[1:]}@s.whatsapp.net:3EB0BIGPDF")
    assert stored.kind == "document"
    other = app.test_client().post("/api/crm/customers", data=b"x" * (2 * 1024 * 1024), headers=salon.headers)
    assert other.status_code == 413, "other routes keep MAX_CONTENT_LENGTH"


def test_an_event_over_the_media_limit_is_413(make_app, wa_env):  # noqa: F811
    app = make_app(**wa_env(MEDIA_MAX_BYTES=str(1024 * 1024)))
    salon = create_tenant(services(app).database)
    huge = os.urandom(1024 * 1024 * 3)
    response = post_bridge(app.test_client(), _media_event(salon.business_id, salon.whatsapp, "3EB0HUGE", huge))
    assert response.status_code == 413
