from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from server.db import dao_crm
from server.db.models import AuditLog, Call, CallTurn, Customer, Message, Thread


def test_upsert_customer_and_thread_are_idempotent(db, tenant):
    with db.scope() as s:
        first = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567", name="Dana")
        again = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567", name="Other name")
        assert first.id == again.id and again.name == "Dana"
        t1 = dao_crm.upsert_thread(s, tenant.business_id, first.id, "whatsapp")
        t2 = dao_crm.upsert_thread(s, tenant.business_id, first.id, "whatsapp")
        voice = dao_crm.upsert_thread(s, tenant.business_id, first.id, "voice")
        assert t1.id == t2.id != voice.id


def test_the_same_phone_in_two_businesses_is_two_customers(db, tenant, other_tenant):
    with db.scope() as s:
        a = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567")
        b = dao_crm.upsert_customer(s, other_tenant.business_id, phone="+972501234567")
        assert a.id != b.id


def test_insert_message_returns_the_existing_row_on_replay(db, tenant):
    with db.scope() as s:
        customer = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567")
        thread = dao_crm.upsert_thread(s, tenant.business_id, customer.id, "whatsapp")
        m1, created1 = dao_crm.insert_message(
            s, thread, direction="in", body="שלום", provider="twilio", provider_message_id="SM1"
        )
        m2, created2 = dao_crm.insert_message(
            s, thread, direction="in", body="שלום", provider="twilio", provider_message_id="SM1"
        )
        assert (created1, created2) == (True, False) and m1.id == m2.id
        assert thread.unread_count == 1
    with db.scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        assert (
            s.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == "message.created")) == 1
        )


def test_inbound_message_reopens_a_resolved_thread(db, tenant):
    with db.scope() as s:
        customer = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567")
        thread = dao_crm.upsert_thread(s, tenant.business_id, customer.id, "whatsapp")
        thread.status = "resolved"
        dao_crm.insert_message(s, thread, direction="out", body="done", provider="twilio", provider_message_id="SMo")
        assert thread.status == "resolved"
        dao_crm.insert_message(s, thread, direction="in", body="עוד שאלה", provider="twilio", provider_message_id="SMi")
        assert thread.status == "open"


def test_lid_customer_is_merged_when_the_phone_arrives(db, tenant):
    with db.scope() as s:
        by_phone = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567", name="Dana")
        phone_thread = dao_crm.upsert_thread(s, tenant.business_id, by_phone.id, "whatsapp")
        dao_crm.insert_message(s, phone_thread, direction="in", body="a", provider="twilio", provider_message_id="SM1")
        by_lid = dao_crm.upsert_customer(s, tenant.business_id, lid="12345@lid")
        lid_thread = dao_crm.upsert_thread(s, tenant.business_id, by_lid.id, "whatsapp")
        dao_crm.insert_message(s, lid_thread, direction="in", body="b", provider="baileys", provider_message_id="c:1")
        assert by_lid.id != by_phone.id
        merged = dao_crm.upsert_customer(s, tenant.business_id, phone="+972501234567", lid="12345@lid")
        assert merged.id == by_phone.id and merged.wa_lid == "12345@lid"
    with db.scope() as s:
        threads = s.scalars(sa.select(Thread).where(Thread.business_id == tenant.business_id)).all()
        assert len(threads) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(Message).where(Message.thread_id == threads[0].id)) == 2
        retired = s.get(Customer, by_lid.id)
        assert retired.merged_into_id == by_phone.id and retired.wa_lid is None


def test_calls_and_turns(db, tenant):
    with db.scope() as s:
        call, created = dao_crm.create_call(
            s, tenant.business_id, call_sid="CA1", from_number="+972501234567", to_number=tenant.phone
        )
        replay, created_again = dao_crm.create_call(
            s, tenant.business_id, call_sid="CA1", from_number="+972501234567", to_number=tenant.phone
        )
        assert created and not created_again and call.id == replay.id
        assert call.customer_id is not None and call.thread_id is not None
        dao_crm.add_call_turn(s, call, turn_index=0, user_text="", agent_text="שלום", t_total_ms=500)
        dao_crm.add_call_turn(s, call, turn_index=0, user_text="", agent_text="שלום", t_total_ms=500)
    with db.scope() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(CallTurn)) == 1


def test_audit_writes_a_row_and_one_json_log_line(db, tenant, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="agentlocator.crm")
    with db.scope() as s:
        dao_crm.audit(s, tenant.business_id, f"user:{tenant.user_id}", "deal.created", "deal", 7, amount_minor=100)
    records = [r for r in caplog.records if getattr(r, "event", None) == "audit"]
    assert len(records) == 1 and records[0].action == "deal.created" and records[0].details == {"amount_minor": 100}
    with db.scope() as s:
        row = s.scalar(sa.select(AuditLog).where(AuditLog.action == "deal.created"))
        assert row.actor == f"user:{tenant.user_id}" and row.entity_id == "7" and row.created_at is not None


def test_times_are_stored_utc_and_read_back_aware_utc(db, tenant):
    """One column type for every time, on both databases (SQLite has no time zone type, PostgreSQL
    answers in the connection's zone): stored as the UTC instant, read back as aware UTC."""
    israel = timezone(timedelta(hours=3))
    with db.scope() as s:
        call, _ = dao_crm.create_call(
            s, tenant.business_id, call_sid="CA-tz", from_number="+972501234567", to_number=tenant.phone
        )
        call.ended_at = datetime(2025, 3, 1, 12, 0, tzinfo=israel)
    with db.scope() as s:
        call = s.scalar(sa.select(Call).where(Call.call_sid == "CA-tz"))
        for value in (call.ended_at, call.created_at, call.started_at):
            assert value.utcoffset() == timedelta(0), value
        assert call.ended_at.replace(tzinfo=None) == datetime(2025, 3, 1, 9, 0)
        assert call.created_at - call.ended_at > timedelta(days=1)  # aware minus aware: no TypeError

        def ended_before(instant: datetime) -> int:  # the bound value is converted to UTC too
            return s.scalar(sa.select(sa.func.count()).select_from(Call).where(Call.ended_at < instant))

        assert ended_before(datetime(2025, 3, 1, 12, 30, tzinfo=israel)) == 1
        assert ended_before(datetime(2025, 3, 1, 11, 30, tzinfo=israel)) == 0


def test_a_naive_time_is_refused_not_guessed(db, tenant):
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), db.scope() as s:
        s.execute(sa.update(Call).values(ended_at=datetime(2025, 3, 1, 9, 0)))
