"""What a killed instance leaves behind must not keep a customer unanswered.

An instance that dies after storing a WhatsApp message, before queueing its AI reply, answers the
provider with an error; the provider delivers the message again, to any instance. That delivery is a
replay (the message is stored already), and the message must still be answered, once.

A jobs worker killed while writing a reply leaves the thread's reply lease held (for minutes). The
reply to the customer's next message, on another worker, takes it over once the killed reply's job
run is known to be lost, instead of waiting (and holding its own job thread) until the lease ends."""

from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa

from server.db.models import Message, Thread, utcnow
from server.jobs.runs import JobRun
from server.routes import whatsapp_webhooks
from server.whatsapp import auto_reply
from tests.test_whatsapp_auto_reply import llm, llm_server, replies, set_auto_reply, wa_app  # noqa: F401
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    bridge,
    bridge_message,
    bridge_server,
    post_bridge,
    tenant,
    twilio_api,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
    wait_for,
)


def test_a_stored_message_whose_reply_was_never_queued_is_answered_on_the_next_delivery(
    wa_app, wa_client, wa_db, tenant, llm, bridge, monkeypatch
):
    set_auto_reply(wa_db, tenant.business_id)
    event = bridge_message(tenant.whatsapp)
    with monkeypatch.context() as died:
        died.setattr(whatsapp_webhooks, "schedule_auto_reply", lambda *args, **kwargs: None)
        assert post_bridge(wa_client, event).status_code == 204  # stored; its reply is never queued
    time.sleep(0.5)
    assert not replies(wa_db) and not llm.requests

    assert post_bridge(wa_client, event).status_code == 204  # delivered again
    wait_for(lambda: replies(wa_db), timeout=15)
    assert post_bridge(wa_client, event).status_code == 204  # and again, once answered
    time.sleep(0.5)
    assert len(llm.requests) == 1 and len(replies(wa_db)) == 1


# ---- a thread's reply lease left by a killed jobs worker ----------------------------------------
def _thread_leased_by_a_killed_reply(wa_client, wa_db, tenant, run_lease_until) -> tuple[int, int]:
    """A customer's thread whose AI-reply lease is held by the reply to its message, as a jobs worker
    killed mid-reply leaves it; that reply's job run (if `run_lease_until`) was leased until then."""
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204  # auto-replies off
    now = utcnow()
    with wa_db.scope() as session:
        message = session.scalars(sa.select(Message).order_by(Message.id.desc())).first()
        thread = session.get(Thread, message.thread_id)
        thread.ai_reply_lease_token, thread.ai_reply_lease_until = f"message-{message.id}", now + timedelta(minutes=3)
        if run_lease_until is not None:
            session.add(
                JobRun(
                    key=f"wa_auto_reply:{message.id}",
                    kind="wa_auto_reply",
                    state="running",
                    attempts=1,
                    created_at=now,
                    updated_at=now,
                    lease_until=run_lease_until(now),
                )
            )
        return thread.id, message.id


JOB_LEASE = timedelta(seconds=30)


def test_a_reply_takes_over_a_thread_whose_lease_holder_was_killed(wa_client, wa_db, tenant, monkeypatch):
    monkeypatch.setattr(auto_reply, "LEASE", timedelta(seconds=1))  # how long a failed wait lasts here
    thread_id, _ = _thread_leased_by_a_killed_reply(wa_client, wa_db, tenant, lambda now: now - 3 * JOB_LEASE)
    started = time.monotonic()
    assert auto_reply._acquire_lease(wa_db, thread_id, "message-999999", JOB_LEASE)
    assert time.monotonic() - started < 0.5  # at once, not after the thread's lease


def test_a_reply_waits_for_a_lease_holder_that_still_runs(wa_client, wa_db, tenant, monkeypatch):
    monkeypatch.setattr(auto_reply, "LEASE", timedelta(seconds=1))
    thread_id, _ = _thread_leased_by_a_killed_reply(wa_client, wa_db, tenant, lambda now: now + JOB_LEASE)
    assert not auto_reply._acquire_lease(wa_db, thread_id, "message-999999", JOB_LEASE)


def test_a_lease_holder_outside_the_job_queue_is_waited_for(wa_client, wa_db, tenant, monkeypatch):
    monkeypatch.setattr(auto_reply, "LEASE", timedelta(seconds=1))
    thread_id, _ = _thread_leased_by_a_killed_reply(wa_client, wa_db, tenant, None)
    assert not auto_reply._acquire_lease(wa_db, thread_id, "message-999999", JOB_LEASE)
