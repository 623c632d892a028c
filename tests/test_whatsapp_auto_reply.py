"""AI auto-replies on WhatsApp: asynchronous, through the provider the message came in on, one at a
time per thread, silent after a staff reply. The language model is the local OpenAI-compatible fake."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from server.db.dao_crm import insert_message
from server.db.models import Business, Thread, utcnow
from server.whatsapp.auto_reply import reply_to_message
from testkit.fakes.openai_server import FakeOpenAI
from testkit.fakes.scripted_providers import scripted_reply
from testkit.jobs import InProcessJobs
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    bridge,
    bridge_message,
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
    wait_for,
)


@pytest.fixture(scope="module")
def llm_server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def llm(llm_server):
    llm_server.reset()
    return llm_server


@pytest.fixture
def wa_app(make_app, wa_env, llm):
    """The app, with its background jobs (the AI replies) run as the jobs worker would."""
    app = make_app(**wa_env(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url))
    with InProcessJobs(app):
        yield app


def set_auto_reply(db, business_id: int, on: bool = True) -> None:
    with db.scope() as session:
        business = session.get(Business, business_id)
        business.features = {**(business.features or {}), "wa_auto_reply": on}
        business.ai_instructions = "מספרה בתל אביב. פתוח א-ה 9:00-19:00."


def replies(db) -> list:
    return [m for m in messages(db, direction="out") if m.status != "queued"]


class GatedModel:
    """A model reply that waits for `open` and records how many calls overlap."""

    def __init__(self):
        self.open = threading.Event()
        self.active = self.most_active = self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, prompt):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            number = self.calls
        self.open.wait(10)
        with self.lock:
            self.active -= 1
        return f"תשובה {number}"


def test_reply_is_written_in_the_background_and_sent_through_the_bridge(wa_client, wa_db, tenant, llm, bridge):
    set_auto_reply(wa_db, tenant.business_id)
    llm.first_token_delay = 1.0  # the webhook must not wait for the model
    started = time.monotonic()
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="אתם פתוחים מחר?")).status_code == 204
    assert time.monotonic() - started < 1.0
    [reply] = wait_for(lambda: replies(wa_db), timeout=15)
    assert (reply.provider, reply.status, reply.sender_user_id, reply.body) == (
        "baileys",
        "sent",
        None,
        "קיבלתי: אתם פתוחים מחר?",
    )
    assert bridge.accepted[0].body["text"] == reply.body and bridge.accepted[0].body["to"] == CUSTOMER
    [request] = llm.requests
    prompt = request["body"]["messages"]
    assert prompt[0]["role"] == "system" and "WhatsApp" in prompt[0]["content"] and "מספרה" in prompt[0]["content"]
    assert prompt[1:] == [{"role": "user", "content": "אתם פתוחים מחר?"}]


def test_reply_goes_back_through_twilio_when_the_message_came_from_twilio(wa_client, wa_db, tenant, llm, twilio_api):
    set_auto_reply(wa_db, tenant.business_id)
    llm.replies_for["יש חניה?"] = "כן, יש חניה ברחוב."
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form(tenant.whatsapp, body="יש חניה?")).status_code == 204
    [reply] = wait_for(lambda: replies(wa_db), timeout=15)
    assert (reply.provider, reply.body) == ("twilio", "כן, יש חניה ברחוב.")
    [request] = twilio_api.requests_for("Messages")
    assert request.form["Body"] == "כן, יש חניה ברחוב." and request.form["To"] == f"whatsapp:{CUSTOMER}"


def test_no_reply_when_the_feature_is_off_or_for_a_replay(wa_client, wa_db, tenant, llm, bridge):
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204
    set_auto_reply(wa_db, tenant.business_id)
    event = bridge_message(tenant.whatsapp)
    assert post_bridge(wa_client, event).status_code == 204
    wait_for(lambda: replies(wa_db), timeout=15)
    assert post_bridge(wa_client, event).status_code == 204  # the bridge re-delivers: nothing new to answer
    time.sleep(0.5)
    assert len(llm.requests) == 1 and len(replies(wa_db)) == 1


def test_silent_after_a_staff_reply(wa_app, wa_client, wa_db, tenant, llm, bridge):
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204
    [inbound] = messages(wa_db)
    with wa_db.scope() as session:
        insert_message(
            session,
            session.get(Thread, inbound.thread_id),
            direction="out",
            body="אני בודקת ואחזור אלייך",
            provider="baileys",
            provider_message_id="3EB0STAFF",
            status="sent",
            sender_user_id=tenant.user_id,
        )
    set_auto_reply(wa_db, tenant.business_id)
    reply_to_message(wa_db, wa_app.config["SETTINGS"], inbound.id)
    assert llm.requests == [] and len(messages(wa_db, direction="out")) == 1


def test_silent_when_staff_replies_while_the_model_is_writing(wa_app, wa_client, wa_db, tenant, llm, bridge):
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204
    [inbound] = messages(wa_db)
    set_auto_reply(wa_db, tenant.business_id)

    def staff_answers_meanwhile(prompt):
        with wa_db.scope() as session:
            insert_message(
                session,
                session.get(Thread, inbound.thread_id),
                direction="out",
                body="כבר עניתי",
                sender_user_id=tenant.user_id,
                status="sent",
            )
        return "תשובת המודל"

    llm.reply_fn = staff_answers_meanwhile
    reply_to_message(wa_db, wa_app.config["SETTINGS"], inbound.id)
    assert len(llm.requests) == 1 and bridge.sends == []
    assert [m.body for m in messages(wa_db, direction="out")] == ["כבר עניתי"]


def test_second_message_is_answered_after_the_first_never_in_parallel(wa_client, wa_db, tenant, llm, bridge):
    set_auto_reply(wa_db, tenant.business_id)
    model = llm.reply_fn = GatedModel()
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="שאלה ראשונה")).status_code == 204
    wait_for(lambda: model.calls == 1)
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="ועוד שאלה")).status_code == 204
    time.sleep(0.6)  # the second task is waiting for the thread's lease, not writing a reply
    assert model.calls == 1
    model.open.set()
    wait_for(lambda: len(replies(wa_db)) == 2, timeout=15)
    assert model.most_active == 1
    second_prompt = llm.requests[1]["body"]["messages"][1:]  # the chat as it happened
    assert second_prompt == [
        {"role": "user", "content": "שאלה ראשונה"},
        {"role": "user", "content": "ועוד שאלה"},
        {"role": "assistant", "content": "תשובה 1"},
    ]
    assert [m.body for m in replies(wa_db)] == ["תשובה 1", "תשובה 2"]


def test_messages_that_arrived_together_get_one_reply(wa_app, wa_client, wa_db, tenant, llm, bridge):
    for text in ("היי", "רציתי לשאול על מחירים"):
        assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text=text)).status_code == 204
    first, second = messages(wa_db)
    set_auto_reply(wa_db, tenant.business_id)
    tasks = [
        threading.Thread(target=reply_to_message, args=(wa_db, wa_app.config["SETTINGS"], m.id))
        for m in (first, second)
    ]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(15)
    assert len(llm.requests) == 1 and len(replies(wa_db)) == 1
    assert llm.requests[0]["body"]["messages"][1:] == [
        {"role": "user", "content": "היי"},
        {"role": "user", "content": "רציתי לשאול על מחירים"},
    ]
    with wa_db.scope() as session:
        thread = session.get(Thread, second.thread_id)
        assert (thread.ai_replied_through_id, thread.ai_reply_lease_token) == (second.id, None)


def test_the_lease_is_shared_with_other_workers(wa_app, wa_client, wa_db, tenant, llm, bridge):
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204
    [inbound] = messages(wa_db)
    set_auto_reply(wa_db, tenant.business_id)
    with wa_db.scope() as session:  # another worker is answering this thread
        session.execute(
            sa.update(Thread).values(
                ai_reply_lease_token="other-worker", ai_reply_lease_until=utcnow() + timedelta(minutes=2)
            )
        )
    task = threading.Thread(target=reply_to_message, args=(wa_db, wa_app.config["SETTINGS"], inbound.id))
    task.start()
    time.sleep(0.6)
    assert llm.requests == []
    with wa_db.scope() as session:  # it finishes (or its lease runs out)
        session.execute(sa.update(Thread).values(ai_reply_lease_until=utcnow() - timedelta(seconds=1)))
    task.join(15)
    assert len(llm.requests) == 1 and len(replies(wa_db)) == 1


def test_a_model_failure_sends_nothing_and_frees_the_thread(wa_app, wa_client, wa_db, tenant, llm, bridge):
    set_auto_reply(wa_db, tenant.business_id)
    llm.fail_next(500, count=3)
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="ראשונה")).status_code == 204
    wait_for(lambda: len(llm.requests) == 3, timeout=20)
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="שנייה")).status_code == 204
    [reply] = wait_for(lambda: replies(wa_db), timeout=15)
    assert reply.body == "קיבלתי: שנייה" and len(bridge.sends) == 1


def test_the_language_model_is_the_one_the_calls_use(make_app, wa_env, wa_client, wa_db, tenant, llm, bridge):
    """Built by the VOICE_PROVIDERS plug-in: swap it for the scripted providers and the reply is theirs."""
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp, text="מתי פותחים?")).status_code == 204
    [inbound] = messages(wa_db)
    set_auto_reply(wa_db, tenant.business_id)
    scripted = make_app(
        **wa_env(
            OPENAI_API_KEY=llm.api_key,
            OPENAI_BASE_URL=llm.base_url,
            VOICE_PROVIDERS="testkit.fakes.scripted_providers:build",
        )
    )
    reply_to_message(wa_db, scripted.config["SETTINGS"], inbound.id)
    assert llm.requests == []
    [reply] = replies(wa_db)
    assert reply.body == scripted_reply("מתי פותחים?") and bridge.accepted[0].body["text"] == reply.body


def test_a_plug_in_that_cannot_be_loaded_sends_nothing_and_frees_the_thread(
    make_app, wa_env, wa_client, wa_db, tenant, llm, bridge, caplog
):
    assert post_bridge(wa_client, bridge_message(tenant.whatsapp)).status_code == 204
    [inbound] = messages(wa_db)
    set_auto_reply(wa_db, tenant.business_id)
    broken = make_app(**wa_env(VOICE_PROVIDERS="testkit.fakes.no_such_module:build"))
    reply_to_message(wa_db, broken.config["SETTINGS"], inbound.id)
    assert llm.requests == [] and bridge.sends == [] and replies(wa_db) == []
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == "wa_auto_reply_llm_failed"]
    assert "VOICE_PROVIDERS" in failed.error and "no_such_module" in failed.error
    with wa_db.scope() as session:
        assert session.get(Thread, inbound.thread_id).ai_reply_lease_token is None
