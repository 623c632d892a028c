"""Console events: which writes publish which event (SQLite and PostgreSQL), and the per-worker hub
that streams them: fan-out by business, resume after `Last-Event-ID`, late-committing ids, pruning,
ending the streams of revoked sessions."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.console.live import EventHub, sse_stream
from server.db import dao_crm
from server.db.events import events_after, latest_event_id, prune_events, publish_event
from server.db.models import ApiToken, Call, Event, Message, Payment, Thread, User, utcnow
from server.payments.states import transition
from server.security.auth import TokenPolicy, issue_token
from server.security.passwords import token_digest
from server.security.sessions import SESSION_TOKEN_NAME
from server.whatsapp.status import advance_status

CUSTOMER = "+972501234567"


def all_events(db) -> list[tuple[str, dict]]:
    with db.scope() as session:
        return [(e.kind, e.payload) for e in session.scalars(sa.select(Event).order_by(Event.id))]


def new_events(db, after: int) -> list[tuple[str, dict]]:
    with db.scope() as session:
        return [(e.kind, e.payload) for e in events_after(session, after)]


def last_id(db) -> int:
    with db.scope() as session:
        return latest_event_id(session)


@pytest.fixture
def thread(db, tenant):
    with db.scope() as session:
        customer = dao_crm.upsert_customer(session, tenant.business_id, phone=CUSTOMER)
        return dao_crm.upsert_thread(session, tenant.business_id, customer.id, "whatsapp")


# ---- what publishes what ----------------------------------------------------------------------


def test_a_stored_message_publishes_message_and_thread_events(db, tenant, thread):
    start = last_id(db)
    with db.scope() as session:
        message, _ = dao_crm.insert_message(
            session,
            session.get(Thread, thread.id),
            direction="in",
            body="שלום",
            provider="twilio",
            provider_message_id="SM" + "1" * 32,
        )
    events = new_events(db, start)
    assert ("message", {"thread_id": thread.id, "message_id": message.id}) in events
    assert ("thread", {"thread_id": thread.id}) in events  # unread count and activity moved
    # A provider's replay stores nothing and tells nothing.
    start = last_id(db)
    with db.scope() as session:
        dao_crm.insert_message(
            session,
            session.get(Thread, thread.id),
            direction="in",
            body="שלום",
            provider="twilio",
            provider_message_id="SM" + "1" * 32,
        )
    assert new_events(db, start) == []


def test_delivery_statuses_publish_message_status_only_when_they_move(db, tenant, thread):
    with db.scope() as session:
        message, _ = dao_crm.insert_message(
            session,
            session.get(Thread, thread.id),
            direction="out",
            body="היי",
            provider="baileys",
            provider_message_id="3EB0AA",
            status="sent",
        )
    start = last_id(db)
    with db.scope() as session:
        assert advance_status(session, message.id, "read")
    with db.scope() as session:
        assert not advance_status(session, message.id, "delivered")  # backwards: ignored, and untold
    with db.scope() as session:
        session.get(Message, message.id).status = "read"  # the same value through the ORM: no change
    assert new_events(db, start) == [
        ("message_status", {"thread_id": thread.id, "message_id": message.id, "status": "read"})
    ]


def test_a_failed_send_status_carries_its_error(db, tenant, thread):
    with db.scope() as session:
        message, _ = dao_crm.insert_message(
            session, session.get(Thread, thread.id), direction="out", body="היי", provider="twilio", status="queued"
        )
    start = last_id(db)
    with db.scope() as session:
        row = session.get(Message, message.id)
        row.status, row.error_code, row.error_message = "failed", "63016", "outside the window"
    assert new_events(db, start) == [
        ("message_status", {"thread_id": thread.id, "message_id": message.id, "status": "failed", "error": "63016"})
    ]


def test_thread_changes_publish_but_ai_reply_bookkeeping_does_not(db, tenant, thread):
    start = last_id(db)
    with db.scope() as session:
        session.get(Thread, thread.id).ai_reply_lease_token = "lease"
    assert new_events(db, start) == []
    with db.scope() as session:
        session.get(Thread, thread.id).status = "resolved"
    assert new_events(db, start) == [("thread", {"thread_id": thread.id})]


def test_call_rows_and_turns_publish_call_events(db, tenant):
    start = last_id(db)
    with db.scope() as session:
        call, _ = dao_crm.create_call(
            session, tenant.business_id, call_sid="CA" + "2" * 32, from_number=CUSTOMER, to_number=tenant.phone
        )
    assert ("call", {"call_sid": "CA" + "2" * 32}) in new_events(db, start)
    start = last_id(db)
    with db.scope() as session:
        dao_crm.add_call_turn(
            session, session.get(Call, call.id), turn_index=0, user_text="שלום", agent_text="היי", t_total_ms=900
        )
    assert new_events(db, start) == [("call", {"call_sid": "CA" + "2" * 32})]
    start = last_id(db)
    with db.scope() as session:
        session.get(Call, call.id).status = "completed"
    assert new_events(db, start) == [("call", {"call_sid": "CA" + "2" * 32})]


def test_payment_creation_and_transitions_publish_payment_events(db, tenant):
    with db.scope() as session:
        payment = Payment(
            business_id=tenant.business_id,
            amount_minor=4990,
            currency="ILS",
            provider="paypal",
            status="created",
            link_token="t" * 40,
        )
        session.add(payment)
    assert all_events(db)[-1] == ("payment", {"payment_id": payment.id, "status": "created"})
    start = last_id(db)
    with db.scope() as session:
        assert transition(session, session.get(Payment, payment.id), "pending", "test")
        assert not transition(session, session.get(Payment, payment.id), "refunded", "test")
    assert new_events(db, start) == [("payment", {"payment_id": payment.id, "status": "pending"})]


def test_events_are_kept_only_when_the_change_commits(db, tenant, thread):
    start = last_id(db)
    with pytest.raises(RuntimeError):
        with db.scope() as session:
            session.get(Thread, thread.id).status = "pending"
            session.flush()
            raise RuntimeError("the request failed")
    assert new_events(db, start) == []


def test_old_events_are_pruned(db, tenant):
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=1)
        session.execute(sa.update(Event).values(created_at=utcnow() - timedelta(hours=25)))
        publish_event(session, tenant.business_id, "thread", thread_id=2)
    with db.scope() as session:
        assert prune_events(session) == 1
    assert all_events(db) == [("thread", {"thread_id": 2})]


# ---- the hub ----------------------------------------------------------------------------------


class StreamReader:
    """Reads an SSE body in a thread, as a browser would; parsed events land in `events`. `close()`
    leaves like a browser does: the server notices at its next write (a heartbeat, here every 0.1 s)."""

    def __init__(self, hub, business_id, digest, last_event_id):
        self.chunks = sse_stream(hub, business_id, digest, last_event_id, heartbeat=0.1)
        self.raw = ""
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.leaving = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def close(self):
        self.leaving.set()
        assert self.ended.wait(3)

    def _read(self):
        try:
            for chunk in self.chunks:
                if self.leaving.is_set():
                    self.chunks.close()
                    return
                self.raw += chunk
                *blocks, self.raw = self.raw.split("\n\n")
                for block in blocks:
                    fields = {}
                    for line in block.split("\n"):
                        if line and not line.startswith(":"):
                            name, _, value = line.partition(": ")
                            fields[name] = value
                    if "event" in fields:
                        fields["data"] = json.loads(fields["data"])
                        self.events.append(fields)
        finally:
            self.ended.set()

    def wait_for(self, count: int, timeout: float = 3.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]


@pytest.fixture
def hub(db):
    return EventHub(db, poll_interval=0.05)


def token_of(tenant) -> str:
    return token_digest(tenant.token)


def test_the_hub_fans_out_each_business_its_own_events_with_one_query_per_poll(db, hub, tenant, other_tenant):
    streams = [StreamReader(hub, tenant.business_id, token_of(tenant), None) for _ in range(3)]
    other = StreamReader(hub, other_tenant.business_id, token_of(other_tenant), None)
    for stream in [*streams, other]:
        assert stream.wait_for(1)[0]["event"] == "ready"
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=7)
        publish_event(session, other_tenant.business_id, "thread", thread_id=8)
    for stream in streams:
        assert [(e["event"], e["data"]) for e in stream.wait_for(2)[1:]] == [("thread", {"thread_id": 7})]
    assert [(e["event"], e["data"]) for e in other.wait_for(2)[1:]] == [("thread", {"thread_id": 8})]
    polls = hub.polls
    time.sleep(0.5)
    assert hub.polls - polls <= 12  # one reader for 4 streams: ~10 polls in 0.5 s, not 40
    assert hub.subscriber_count == 4
    for stream in [*streams, other]:
        stream.close()
    assert hub.subscriber_count == 0


def test_a_stream_resumes_after_last_event_id_without_gaps_or_repeats(db, hub, tenant):
    with db.scope() as session:
        for n in range(3):
            publish_event(session, tenant.business_id, "thread", thread_id=n)
    ids = [e.id for e in _rows(db)]
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), ids[0])
    events = stream.wait_for(3)
    assert [(e["event"], e.get("id")) for e in events] == [
        ("thread", str(ids[1])),
        ("thread", str(ids[2])),
        ("ready", str(ids[2])),
    ]
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=9)
    assert [e["data"] for e in stream.wait_for(4)[3:]] == [{"thread_id": 9}]
    time.sleep(0.2)
    assert len(stream.events) == 4
    stream.close()


def test_ready_gives_the_position_a_reconnect_resumes_from(db, hub, tenant):
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=1)
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    ready = stream.wait_for(1)[0]
    assert ready["event"] == "ready" and int(ready["id"]) == last_id(db)
    assert ready["data"] == {"last_event_id": last_id(db), "replayed": 0}
    stream.close()


def test_an_id_committed_late_is_still_delivered(make_app, tenant, hub, db):
    """Two writers: the one holding the lower id commits after the higher one is already streamed."""
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    slow = db.sessions()
    publish_event(slow, tenant.business_id, "thread", thread_id=1)  # takes the next id, not yet committed
    if db.engine.dialect.name == "sqlite":
        slow.commit()  # SQLite has one writer: the second can't start before this commits
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=2)
    stream.wait_for(2)
    slow.commit()
    slow.close()
    assert sorted(e["data"]["thread_id"] for e in stream.wait_for(3)[1:]) == [1, 2]
    stream.close()


def test_an_id_still_uncommitted_when_the_poller_starts_is_delivered(tenant, hub, db):
    """The lower id is taken before the first browser connects and committed after (PostgreSQL: SQLite
    lets no second writer commit meanwhile, so there is no such interleaving to test there)."""
    slow = db.sessions()
    publish_event(slow, tenant.business_id, "thread", thread_id=1)
    if db.engine.dialect.name == "sqlite":
        slow.commit()
    with db.scope() as session:
        publish_event(session, tenant.business_id, "thread", thread_id=2)
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    slow.commit()
    slow.close()
    delivered = [e["data"]["thread_id"] for e in stream.wait_for(2)[1:]]
    # On SQLite both rows were committed before the stream began: neither is news to it.
    assert delivered == ([] if db.engine.dialect.name == "sqlite" else [1])
    stream.close()


def test_a_revoked_session_or_disabled_user_ends_the_stream(db, hub, tenant, monkeypatch):
    monkeypatch.setattr("server.console.live.TOKEN_CHECK_SECONDS", 0.1)
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    time.sleep(0.3)
    assert not stream.ended.is_set()
    with db.scope() as session:
        session.scalar(sa.select(ApiToken).where(ApiToken.user_id == tenant.user_id)).revoked_at = utcnow()
    assert stream.ended.wait(3)
    assert hub.subscriber_count == 0


def test_a_disabled_user_loses_the_stream(db, hub, tenant, monkeypatch):
    monkeypatch.setattr("server.console.live.TOKEN_CHECK_SECONDS", 0.1)
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    with db.scope() as session:
        session.get(User, tenant.user_id).disabled_at = utcnow()
    assert stream.ended.wait(3)


def test_a_quiet_stream_sends_heartbeat_comments(db, hub, tenant):
    chunks = sse_stream(hub, tenant.business_id, token_of(tenant), None, heartbeat=0.1)
    assert next(chunks).startswith("retry: ")
    started = time.monotonic()
    assert next(chunks) == ": keepalive\n\n"
    assert 0.05 < time.monotonic() - started < 1.0
    chunks.close()


def test_draining_ends_every_stream(db, tenant):
    draining = threading.Event()
    hub = EventHub(db, draining=draining.is_set, poll_interval=0.05)
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    draining.set()
    assert stream.ended.wait(3)


def _rows(db) -> list[Event]:
    with db.scope() as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def test_an_expired_token_ends_the_stream(db, tenant, monkeypatch):
    monkeypatch.setattr("server.console.live.TOKEN_CHECK_SECONDS", 0.1)
    hub = EventHub(db, poll_interval=0.05, policy=TokenPolicy(ttl=timedelta(days=90)))
    stream = StreamReader(hub, tenant.business_id, token_of(tenant), None)
    stream.wait_for(1)
    time.sleep(0.3)
    assert not stream.ended.is_set()
    with db.scope() as session:
        session.scalar(sa.select(ApiToken).where(ApiToken.user_id == tenant.user_id)).created_at = utcnow() - timedelta(
            days=90, minutes=1
        )
    assert stream.ended.wait(3)
    assert hub.subscriber_count == 0


def test_an_idle_console_session_ends_its_stream_which_does_not_keep_it_alive(db, tenant, monkeypatch):
    monkeypatch.setattr("server.console.live.TOKEN_CHECK_SECONDS", 0.1)
    hub = EventHub(db, poll_interval=0.05, policy=TokenPolicy(session_idle=timedelta(minutes=30)))
    with db.scope() as session:
        token = issue_token(session, session.get(User, tenant.user_id), name=SESSION_TOKEN_NAME)
        session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == token_digest(token))).last_used_at = (
            utcnow() - timedelta(minutes=29, seconds=58)
        )
    stream = StreamReader(hub, tenant.business_id, token_digest(token), None)
    stream.wait_for(1)
    time.sleep(0.3)
    assert not stream.ended.is_set()  # still within its idle limit
    # Streaming is no use of the session: a couple of seconds on, its idle limit has passed.
    assert stream.ended.wait(5)
    assert hub.subscriber_count == 0
    with db.scope() as session:
        used = session.scalar(sa.select(ApiToken.last_used_at).where(ApiToken.token_hash == token_digest(token)))
    assert utcnow() - used > timedelta(minutes=30)
