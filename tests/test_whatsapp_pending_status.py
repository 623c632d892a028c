"""A delivery status that arrives before its message has the provider's id is kept, and applied once
the send stores the id (docs/api.md, "Webhooks"). The fakes report while the send is still waiting
for their answer, as Twilio and the bridge can."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import PendingStatus, utcnow
from server.whatsapp.status import apply_status, keep_for_later
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    SEND,
    TWILIO_STATUS,
    bridge,
    bridge_server,
    messages,
    new_message_sid,
    post_bridge,
    post_twilio,
    status_form,
    tenant,
    twilio_api,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
)


@pytest.fixture
def wa_app(make_app, wa_env):
    return make_app(**wa_env())


@pytest.fixture
def twilio_reports(twilio_api, wa_app):
    """`twilio_reports(*forms)`: the statuses Twilio posts for the next message, before its create answers."""
    posted = []

    def report(*statuses: tuple[str, dict[str, str]]) -> list[int]:
        def post(message):
            client = wa_app.test_client()  # the fake's thread: not the client the send is using
            for status, extra in statuses:
                response = post_twilio(client, TWILIO_STATUS, status_form(message["sid"], status, **extra))
                posted.append(response.status_code)

        twilio_api.before_answer = post
        return posted

    yield report
    twilio_api.before_answer = None


def send_twilio(client, tenant) -> dict:
    response = client.post(
        SEND, json={"to": CUSTOMER, "text": "התור נקבע ל-10:00", "provider": "twilio"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.json
    return response.json


def pending(db) -> list[PendingStatus]:
    with db.scope() as session:
        return list(session.scalars(sa.select(PendingStatus).order_by(PendingStatus.id)))


@pytest.mark.parametrize(
    "reports, expected",
    [
        ([("sent", {}), ("delivered", {}), ("read", {})], ("read", None)),
        ([("read", {}), ("delivered", {}), ("sent", {})], ("read", None)),  # out of order: still read
        (
            [("delivered", {}), ("undelivered", {"ErrorCode": "63016", "ErrorMessage": "outside the window"})],
            ("delivered", None),
        ),  # a failure after delivery is ignored
        ([("undelivered", {"ErrorCode": "63016", "ErrorMessage": "outside the window"})], ("failed", "63016")),
        ([("failed", {"ErrorCode": "30008"}), ("read", {})], ("read", None)),  # read proves it arrived
    ],
    ids=["in-order", "reverse", "failed-after-delivered", "failed", "failed-then-read"],
)
def test_twilio_status_before_the_send_stored_the_sid_is_applied(
    wa_client, wa_db, tenant, twilio_reports, reports, expected
):
    posted = twilio_reports(*reports)
    sent = send_twilio(wa_client, tenant)
    assert posted == [204] * len(reports)  # each callback found no message with that sid: answered as ever
    [message] = messages(wa_db)
    assert message.provider_message_id == sent["provider_message_id"]
    assert (message.status, message.error_code) == expected
    if expected[0] == "failed":
        assert message.error_message == "outside the window"  # the reason kept with the report
    assert pending(wa_db) == []


def test_a_late_sent_never_overwrites_an_early_read(wa_client, wa_db, tenant, twilio_reports):
    twilio_reports(("read", {}))
    sent = send_twilio(wa_client, tenant)
    assert messages(wa_db)[0].status == "read"
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(sent["provider_message_id"], "sent")).status_code == 204
    assert (
        post_twilio(wa_client, TWILIO_STATUS, status_form(sent["provider_message_id"], "delivered")).status_code == 204
    )
    assert messages(wa_db)[0].status == "read"


def test_bridge_status_before_the_send_stored_the_id_is_applied(wa_app, wa_client, wa_db, tenant, bridge):
    posted = []

    def report(message_id: str) -> None:
        client = wa_app.test_client()
        for status in ("read", "delivered", "sent"):
            posted.append(post_bridge(client, {"event": "status", "id": message_id, "status": status}).status_code)

    bridge.before_answer = report
    response = wa_client.post(
        SEND, json={"to": CUSTOMER, "text": "שלום", "provider": "baileys"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.json
    assert posted == [204, 204, 204]
    [message] = messages(wa_db)
    assert (message.provider, message.provider_message_id, message.status) == (
        "baileys",
        response.json["provider_message_id"],
        "read",
    )
    assert pending(wa_db) == []


def test_a_status_whose_message_never_appears_is_kept_then_pruned(wa_client, wa_db, tenant):
    orphan = new_message_sid()
    for _ in range(2):  # Twilio retrying the callback: kept once
        assert post_twilio(wa_client, TWILIO_STATUS, status_form(orphan, "delivered")).status_code == 204
    # Statuses that the send's own `sent` would make moot are not kept.
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(orphan, "sent")).status_code == 204
    [kept] = pending(wa_db)
    assert (kept.provider, kept.provider_message_id, kept.status) == ("twilio", orphan, "delivered")

    with wa_db.scope() as session:  # a day and a bit later
        session.execute(sa.update(PendingStatus).values(received_at=utcnow() - timedelta(hours=25)))
    newer = new_message_sid()
    assert post_twilio(wa_client, TWILIO_STATUS, status_form(newer, "read")).status_code == 204
    assert [(p.provider_message_id, p.status) for p in pending(wa_db)] == [(newer, "read")]
    assert messages(wa_db) == []


def test_a_status_with_an_unusable_id_is_not_kept(wa_client, wa_db, tenant):
    assert post_twilio(wa_client, TWILIO_STATUS, status_form("SM" + "a" * 200, "delivered")).status_code == 204
    assert post_bridge(wa_client, {"event": "status", "id": "3EB0" + "A" * 200, "status": "read"}).status_code == 204
    assert pending(wa_db) == []


def test_keeping_a_status_looks_again_after_committing(wa_db, tenant):
    """The send stored the id after the callback's first look, and settled before the report was
    kept: the callback's second look, after its commit, applies it."""
    sid = new_message_sid()
    with wa_db.scope() as session:
        customer = upsert_customer(session, tenant.business_id, phone=CUSTOMER)
        thread = upsert_thread(session, tenant.business_id, customer.id, "whatsapp")
        insert_message(
            session, thread, direction="out", body="שלום", provider="twilio", provider_message_id=sid, status="sent"
        )
    with wa_db.scope() as session:
        assert keep_for_later(session, "twilio", sid, "delivered") is True
    assert messages(wa_db)[0].status == "delivered"
    assert pending(wa_db) == []


def test_a_kept_status_the_send_missed_is_settled_by_the_next_report(wa_db, tenant):
    sid = new_message_sid()
    with wa_db.scope() as session:
        keep_for_later(session, "twilio", sid, "failed", error_code="30008", error_message="unknown error")
        customer = upsert_customer(session, tenant.business_id, phone=CUSTOMER)
        thread = upsert_thread(session, tenant.business_id, customer.id, "whatsapp")
        insert_message(
            session, thread, direction="out", body="שלום", provider="twilio", provider_message_id=sid, status="sent"
        )
    assert len(pending(wa_db)) == 1  # stored without the send's settling (its database went away)
    with wa_db.scope() as session:
        assert apply_status(session, "twilio", sid, "sent") is True
    [message] = messages(wa_db)
    assert (message.status, message.error_code, message.error_message) == ("failed", "30008", "unknown error")
    assert pending(wa_db) == []
