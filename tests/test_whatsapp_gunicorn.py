"""WhatsApp under production conditions: real gunicorn, gevent workers, two of them, both databases.
The AI reply is a job queued after the webhook's response and run by the jobs worker process (two
threads); the thread lease holds across them."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
import requests
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from server.db.models import Business, Thread
from server.security import bridge_hmac
from testkit.fakes.openai_server import FakeOpenAI
from testkit.servers import GunicornServer
from tests.conftest import BASE_TEST_ENV, TEST_BASE_URL, TEST_TWILIO_TOKEN, create_tenant
from tests.test_whatsapp_auto_reply import GatedModel
from tests.test_whatsapp_support import (  # noqa: F401
    BAILEYS,
    TWILIO_INBOUND,
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    messages,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_env,
    wait_for,
)

# the app under real gunicorn, two workers
pytestmark = pytest.mark.slow


def test_ai_replies_across_two_gevent_workers(database_url, db, tmp_path, wa_env, bridge, twilio_api):
    tenant = create_tenant(db)
    with db.scope() as session:
        session.get(Business, tenant.business_id).features = {"wa_auto_reply": True}
    with FakeOpenAI() as llm:
        model = llm.reply_fn = GatedModel()
        env = {
            **BASE_TEST_ENV,
            **wa_env(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url),
            "DATABASE_URL": database_url,
        }
        with GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log", jobs_worker=True) as server:
            # Twilio: signed inbound → 204 at once → the reply goes back through Twilio.
            form = twilio_form(tenant.whatsapp, body="מה שעות הפתיחה?")
            signature = RequestValidator(TEST_TWILIO_TOKEN).compute_signature(TEST_BASE_URL + TWILIO_INBOUND, form)
            response = requests.post(
                server.url + TWILIO_INBOUND, data=form, headers={"X-Twilio-Signature": signature}, timeout=5
            )
            assert response.status_code == 204 and response.content == b""
            wait_for(lambda: model.calls == 1)
            # Two more customer messages, on whichever worker: each waits for the thread's lease.
            events = [bridge_message(tenant.whatsapp, text=text) for text in ("ועוד משהו", "ושאלה אחרונה")]
            # Sent at once from two threads; their answers are checked here, in the test's own thread.
            with concurrent.futures.ThreadPoolExecutor(len(events)) as pool:
                statuses = list(pool.map(lambda event: _post_bridge(server.url, event), events, timeout=10))
            assert statuses == [204, 204]
            wait_for(lambda: len(messages(db, direction="in")) == 3)
            model.open.set()
            wait_for(lambda: _answered_through(db) == max(m.id for m in messages(db, direction="in")), timeout=20)
            assert "Traceback" not in server.logs()
    assert model.most_active == 1
    replies = messages(db, direction="out")
    assert 2 <= len(replies) <= 3 and all(r.status == "sent" and r.sender_user_id is None for r in replies)
    assert replies[0].provider == "twilio" and twilio_api.requests_for("Messages")[0].form["Body"] == "תשובה 1"
    assert [r.provider for r in replies[1:]] == ["baileys"] * (len(replies) - 1)


def _post_bridge(url: str, event: dict) -> int:
    raw = json.dumps(event, ensure_ascii=False).encode("utf-8")
    response = requests.post(
        url + BAILEYS,
        data=raw,
        timeout=5,
        headers={"Content-Type": "application/json", bridge_hmac.HEADER: bridge_hmac.sign(WA_SECRET, raw)},
    )
    return response.status_code


def _answered_through(db) -> int:
    with db.scope() as session:
        return session.scalar(sa.select(sa.func.max(Thread.ai_replied_through_id))) or 0
