"""Staff taking a WhatsApp conversation over from the AI (`threads.ai_paused`, the console's
"מענה אוטומטי" switch): the CRM API sets and clears it, and the AI auto-reply stays silent in a
paused thread, also when the pause comes after the message (the queued job, the model writing).
Both databases; replies are counted at the Twilio REST fake."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server.db.dao_crm import upsert_customer, upsert_thread
from server.db.models import AuditLog, Business, Event, Thread
from testkit.fakes.openai_server import FakeOpenAI
from testkit.jobs import InProcessJobs
from tests.conftest import add_user, create_tenant
from tests.crm_seed import seed_message
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    bridge,
    bridge_server,
    messages,
    post_twilio,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
)

THREADS = "/api/crm/threads"


def thread_events(db, thread_id: int) -> int:
    """How many live `thread` events the console would get about `thread_id`."""
    with db.scope() as session:
        rows = session.scalars(sa.select(Event).where(Event.kind == "thread")).all()
        return sum(1 for row in rows if row.payload.get("thread_id") == thread_id)


def is_paused(db, thread_id: int) -> bool:
    with db.scope() as session:
        return session.get(Thread, thread_id).ai_paused


def patch(client, tenant, thread_id: int, body, expect: int = 200) -> dict:
    response = client.patch(f"{THREADS}/{thread_id}", json=body, headers=tenant.headers)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


# ---- the CRM API --------------------------------------------------------------------------------


def test_patch_pauses_and_resumes_the_ai_audited_and_told_to_consoles(client, db, tenant):
    thread_id, _ = seed_message(db, tenant.business_id)
    url = f"{THREADS}/{thread_id}"
    assert client.get(url, headers=tenant.headers).get_json()["ai_paused"] is False  # a new thread: the AI answers
    events_before = thread_events(db, thread_id)

    assert patch(client, tenant, thread_id, {"ai_paused": True})["ai_paused"] is True
    assert is_paused(db, thread_id) is True
    assert client.get(url, headers=tenant.headers).get_json()["ai_paused"] is True
    [listed] = client.get(THREADS, headers=tenant.headers).get_json()["items"]
    assert (listed["id"], listed["ai_paused"]) == (thread_id, True)
    assert thread_events(db, thread_id) == events_before + 1

    patch(client, tenant, thread_id, {"ai_paused": True})  # no change: nothing audited, nothing told
    assert thread_events(db, thread_id) == events_before + 1

    body = patch(client, tenant, thread_id, {"ai_paused": False, "status": "pending"})
    assert (body["ai_paused"], body["status"]) == (False, "pending")
    assert is_paused(db, thread_id) is False
    assert thread_events(db, thread_id) == events_before + 2
    with db.scope() as session:
        rows = session.scalars(
            sa.select(AuditLog)
            .where(AuditLog.entity_type == "thread", AuditLog.entity_id == str(thread_id))
            .order_by(AuditLog.id)
        ).all()
        assert [(r.actor, r.action) for r in rows] == [(f"user:{tenant.user_id}", "thread.updated")] * 2
        assert rows[0].details == {"before": {"ai_paused": False}, "after": {"ai_paused": True}}
        assert rows[1].details == {
            "before": {"ai_paused": True, "status": "open"},
            "after": {"ai_paused": False, "status": "pending"},
        }


@pytest.mark.parametrize("bad", [None, 0, 1, "true", "false", "", [], {}, [True]], ids=repr)
def test_ai_paused_is_a_boolean_or_a_400_naming_it(client, db, tenant, bad):
    thread_id, _ = seed_message(db, tenant.business_id)
    body = patch(client, tenant, thread_id, {"ai_paused": bad}, expect=400)
    assert (body["error"], body["field"]) == ("invalid_field", "ai_paused")
    assert is_paused(db, thread_id) is False


def test_a_bad_ai_paused_changes_nothing_else_sent_with_it(client, db, tenant):
    thread_id, _ = seed_message(db, tenant.business_id)
    patch(client, tenant, thread_id, {"status": "resolved", "ai_paused": "yes"}, expect=400)
    detail = client.get(f"{THREADS}/{thread_id}", headers=tenant.headers).get_json()
    assert (detail["status"], detail["ai_paused"]) == ("open", False)


def test_another_business_cannot_pause_a_thread(client, db, tenant, other_tenant):
    thread_id, _ = seed_message(db, tenant.business_id)
    for body in ({"ai_paused": True}, {"ai_paused": "nonsense"}):
        assert patch(client, other_tenant, thread_id, body, expect=404)["error"] == "not_found"
    assert is_paused(db, thread_id) is False
    assert patch(client, tenant, 999999, {"ai_paused": True}, expect=404)["error"] == "not_found"


def test_an_agent_can_take_a_thread_over(client, db, tenant):
    agent = add_user(db, tenant.business_id, "agent")
    thread_id, _ = seed_message(db, tenant.business_id)
    assert patch(client, agent, thread_id, {"ai_paused": True})["ai_paused"] is True


def test_merging_a_customers_threads_keeps_a_takeover(db, tenant):
    """A LID-only customer turns out to be a known phone: their threads become one, still taken over."""
    with db.scope() as session:
        known = upsert_customer(session, tenant.business_id, phone="+972501111111")
        kept_id = upsert_thread(session, tenant.business_id, known.id, "whatsapp").id
        by_lid = upsert_customer(session, tenant.business_id, lid="123456789@lid")
        taken_over = upsert_thread(session, tenant.business_id, by_lid.id, "whatsapp")
        taken_over.ai_paused = True
        taken_over_id = taken_over.id
    with db.scope() as session:  # a message from both the LID and the phone: the two are one customer
        assert upsert_customer(session, tenant.business_id, phone="+972501111111", lid="123456789@lid").id == known.id
    with db.scope() as session:
        assert session.get(Thread, taken_over_id) is None
    assert is_paused(db, kept_id) is True


# ---- the AI auto-reply --------------------------------------------------------------------------


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
    """The app; its queued AI replies run when a test calls `jobs.run_due()`, as the jobs worker would."""
    return make_app(**wa_env(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url))


@pytest.fixture
def jobs(wa_app):
    return InProcessJobs(wa_app)


@pytest.fixture
def wa_tenant(wa_db):
    """Business A on this module's WhatsApp app."""
    return create_tenant(wa_db)


@pytest.fixture
def auto_reply_on(wa_db, wa_tenant):
    with wa_db.scope() as session:
        business = session.get(Business, wa_tenant.business_id)
        business.features = {**(business.features or {}), "wa_auto_reply": True}


def customer_writes(client, db, tenant, text: str, customer: str = CUSTOMER) -> int:
    """An inbound Twilio WhatsApp message (the webhook queues its AI reply); returns its thread."""
    response = post_twilio(client, TWILIO_INBOUND, twilio_form(tenant.whatsapp, from_=customer, body=text))
    assert response.status_code == 204
    [stored] = messages(db, direction="in", body=text)
    return stored.thread_id


def twilio_sends(twilio_api) -> list[str]:
    return [request.form["Body"] for request in twilio_api.requests_for("Messages")]


def test_no_ai_reply_in_a_thread_staff_took_over_and_one_after_handing_it_back(
    wa_client, wa_db, wa_tenant, jobs, llm, twilio_api, auto_reply_on
):
    thread_id = customer_writes(wa_client, wa_db, wa_tenant, "שלום")
    assert jobs.run_due() == 1 and twilio_sends(twilio_api) == ["קיבלתי: שלום"]  # the AI answers
    patch(wa_client, wa_tenant, thread_id, {"ai_paused": True})

    assert customer_writes(wa_client, wa_db, wa_tenant, "אפשר לדבר עם מישהו?") == thread_id
    assert jobs.run_due() == 0  # the webhook queued no reply
    assert twilio_sends(twilio_api) == ["קיבלתי: שלום"] and len(llm.requests) == 1

    other = customer_writes(wa_client, wa_db, wa_tenant, "יש תור מחר?", customer="+972529876543")  # another customer
    assert other != thread_id
    assert jobs.run_due() == 1 and twilio_sends(twilio_api)[-1] == "קיבלתי: יש תור מחר?"

    patch(wa_client, wa_tenant, thread_id, {"ai_paused": False})
    customer_writes(wa_client, wa_db, wa_tenant, "תודה, עוד שאלה")
    assert jobs.run_due() == 1
    assert twilio_sends(twilio_api) == ["קיבלתי: שלום", "קיבלתי: יש תור מחר?", "קיבלתי: תודה, עוד שאלה"]


def test_a_reply_queued_before_the_takeover_is_not_sent(
    wa_client, wa_db, wa_tenant, jobs, llm, twilio_api, auto_reply_on
):
    thread_id = customer_writes(wa_client, wa_db, wa_tenant, "שלום")  # the reply job is queued, not yet run
    patch(wa_client, wa_tenant, thread_id, {"ai_paused": True})
    assert jobs.run_due() == 1
    assert twilio_sends(twilio_api) == [] and llm.requests == []
    assert messages(wa_db, direction="out") == []


def test_a_takeover_while_the_model_is_writing_stops_the_reply(
    wa_client, wa_db, wa_tenant, jobs, llm, twilio_api, auto_reply_on
):
    thread_id = customer_writes(wa_client, wa_db, wa_tenant, "שלום")

    def staff_take_over_meanwhile(prompt):
        patch(wa_client, wa_tenant, thread_id, {"ai_paused": True})
        return "תשובת המודל"

    llm.reply_fn = staff_take_over_meanwhile
    assert jobs.run_due() == 1
    assert len(llm.requests) == 1 and twilio_sends(twilio_api) == []
    assert messages(wa_db, direction="out") == []
    with wa_db.scope() as session:
        assert session.get(Thread, thread_id).ai_reply_lease_token is None  # the thread is free for later
