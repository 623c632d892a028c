"""Fault test: the database goes away for ~30 s under real gunicorn (2 gevent workers) and a real jobs
worker, while 100 signed WhatsApp messages arrive (some delivered twice) and a call comes in; the
jobs worker is killed (SIGKILL) in the middle of an AI reply and a new one started. Afterwards: every
message stored once, every due AI reply sent exactly once (counted at the Twilio REST fake), and the
call was answered in time."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest
import requests
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from server.db.engine import Database
from server.db.models import Business, BusinessNumber, Message
from testkit.fakes.openai_server import FakeOpenAI, last_user_text
from testkit.fakes.twilio_rest import FakeTwilioRest
from testkit.fakes.twilio_webhooks import new_call_sid, signature_header, voice_params
from testkit.postgres import TemporaryPostgres, postgres_bin
from testkit.servers import GunicornServer, JobsWorker
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN
from tests.test_whatsapp_support import TWILIO_INBOUND, TWILIO_SENDER, twilio_form

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server binaries to run a cluster"),
]

MESSAGES = 100
REDELIVERED = 10  # Twilio delivers some of them twice
OUTAGE_SECONDS = 30.0
BUSINESS_WHATSAPP = "+97235557000"
BUSINESS_PHONE = "+97235557001"


class FirstReplyHeld:
    """The model's reply: the first one waits (the jobs worker is killed under it); the rest don't."""

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, messages):
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.started.set()
            self.release.wait(60)
        return "תשובה ל: " + last_user_text(messages)


def customer(index: int) -> str:
    return f"+97250{index:07d}"


def post_signed(url: str, path: str, form: dict[str, str]) -> requests.Response:
    signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(TEST_BASE_URL + path, form)
    return requests.post(url + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)


def wait_until(predicate, timeout: float, what: Callable[[], str]):
    """Wait for `predicate`; on a timeout, fail with `what()`, read then (the state it timed out in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s: {what()}")


def test_a_database_outage_loses_no_message_and_sends_each_reply_once(tmp_path):
    with (
        TemporaryPostgres() as pg,
        FakeOpenAI() as llm,
        FakeTwilioRest(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN) as twilio,
    ):
        model = llm.reply_fn = FirstReplyHeld()
        env = {
            **BASE_TEST_ENV,
            "DATABASE_URL": pg.url,
            "JOBS_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
            "ENABLE_WA_TWILIO": "true",
            "TWILIO_WA_FROM": f"whatsapp:{TWILIO_SENDER}",
            "TWILIO_API_BASE_URL": twilio.url,
            "OPENAI_API_KEY": llm.api_key,
            "OPENAI_BASE_URL": llm.base_url,
            "SHUTDOWN_GRACE_SECONDS": "1",
            "JOBS_WORKERS": "4",
            "LOG_LEVEL": "INFO",
            "JOBS_LEASE_SECONDS": "3",
        }
        with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log") as server:
            database = Database(pg.url)
            with database.scope() as session:
                business = Business(name="סלון דנה", features={"wa_auto_reply": True})
                session.add(business)
                session.flush()
                session.add_all(
                    [
                        BusinessNumber(business_id=business.id, number=BUSINESS_WHATSAPP, kind="whatsapp"),
                        BusinessNumber(business_id=business.id, number=BUSINESS_PHONE, kind="voice"),
                    ]
                )
            first_worker = JobsWorker(server.env, log_path=tmp_path / "worker-1.log", workers=4).start()

            # ---- the outage: 100 messages (10 of them twice) and a call while the database is away
            pg.stop()
            outage_started = time.monotonic()
            forms = [twilio_form(BUSINESS_WHATSAPP, from_=customer(i), body=f"הודעה מספר {i}") for i in range(MESSAGES)]
            recipients = {f"whatsapp:{customer(i)}" for i in range(MESSAGES)}
            deliveries = forms + forms[:REDELIVERED]
            pause = (OUTAGE_SECONDS - 5) / len(deliveries)

            def deliver(index: int) -> int:  # spread evenly over the outage
                time.sleep(max(0.0, outage_started + index * pause - time.monotonic()))
                return post_signed(server.url, TWILIO_INBOUND, deliveries[index]).status_code

            with ThreadPoolExecutor(4) as pool:
                statuses = Counter(pool.map(deliver, range(len(deliveries))))
            call = voice_params(new_call_sid(), to=BUSINESS_PHONE)
            started = time.monotonic()
            answer = requests.post(
                server.url + "/webhook/incoming_call",
                data=call,
                timeout=10,
                headers=signature_header(TEST_BASE_URL + "/webhook/incoming_call", call),
            )
            call_seconds = time.monotonic() - started
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            pg.start()
            outage = time.monotonic() - outage_started
            assert statuses == {204: len(deliveries)}, statuses
            assert answer.status_code == 200 and call_seconds < 2.0, (answer.status_code, call_seconds)
            assert [child.tag for child in ET.fromstring(answer.content)] == ["Play", "Record", "Hangup"]

            # ---- the jobs worker is killed outright while the model writes the first reply: the jobs it
            # had taken off the queue are back once their leases run out
            assert model.started.wait(60), first_worker.logs()[-3000:]
            assert first_worker.kill() == -9
            model.release.set()
            back = time.monotonic()
            with JobsWorker(server.env, log_path=tmp_path / "worker-2.log", workers=4) as second_worker:
                wait_until(
                    lambda: len(twilio.requests_for("Messages")) >= MESSAGES,
                    180,
                    lambda: (
                        f"every reply sent: {len(twilio.requests_for('Messages'))} of {MESSAGES}; not answered: "
                        f"{sorted(recipients - {r.form['To'] for r in twilio.requests_for('Messages')})}\n"
                        + second_worker.logs()[-4000:]
                    ),
                )
                time.sleep(3)  # anything sent twice would show up now
                assert '"reason": "lease expired"' in second_worker.logs()
            drained = time.monotonic() - back

            with database.scope() as session:
                inbound = session.scalars(sa.select(Message).where(Message.direction == "in")).all()
                outbound = session.scalars(sa.select(Message).where(Message.direction == "out")).all()
            database.engine.dispose()
            assert "Traceback" not in server.logs()

    stored_ids = Counter(m.provider_message_id for m in inbound)
    sends = Counter(r.form["To"] for r in twilio.requests_for("Messages"))
    figures = {
        "outage_seconds": round(outage, 1),
        "webhooks_delivered": len(deliveries),
        "answered_204": statuses[204],
        "messages_stored": len(inbound),
        "duplicates_stored": sum(count - 1 for count in stored_ids.values()),
        "replies_sent": sum(sends.values()),
        "customers_answered": len(sends),
        "most_replies_to_one_customer": max(sends.values()),
        "model_calls": model.calls,
        "call_answer_seconds": round(call_seconds, 3),
        "drain_after_restart_seconds": round(drained, 1),
    }
    print("\ndatabase outage figures:", figures)
    assert len(inbound) == MESSAGES and figures["duplicates_stored"] == 0
    assert sorted(m.body for m in inbound) == sorted(f["Body"] for f in forms)
    assert set(sends) == recipients
    assert figures["most_replies_to_one_customer"] == 1 and len(outbound) == MESSAGES
    assert all(m.status == "sent" for m in outbound)
