"""WhatsApp AI replies that act through the agent's tools: a customer books an appointment in a chat
and then cancels it. Signed Twilio webhooks in, the jobs run as the jobs worker runs them, the real
`openai` SDK against the wire fake scripting the tool calls, replies and notices out through the
Twilio REST fake; the tool-call rows name the thread and the message answered."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from server.db.models import Appointment, Business, ToolCall
from testkit.fakes.openai_server import FakeOpenAI, ToolCalls, last_user_text
from testkit.jobs import InProcessJobs
from tests.appointments_support import next_weekday, set_up_book
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    TWILIO_INBOUND,
    bridge,
    bridge_server,
    messages,
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
    app = make_app(**wa_env(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url))
    with InProcessJobs(app):
        yield app


def test_a_whatsapp_chat_books_and_then_cancels_an_appointment(wa_client, wa_db, tenant, llm, twilio_api):
    with wa_db.scope() as session:
        business = session.get(Business, tenant.business_id)
        business.features = {"wa_auto_reply": True}
    book = set_up_book(wa_db, tenant.business_id)
    day = next_weekday(3)  # a Wednesday

    def model(messages):
        if messages[-1]["role"] == "tool":
            result = json.loads(messages[-1]["content"])
            if result.get("booked"):
                return f"קבעתי לך תספורת ל-{result['local']}."
            if result.get("cancelled"):
                return "ביטלתי את התור."
            return "לא הצלחתי, אעביר לצוות."
        said = last_user_text(messages)
        if "לקבוע" in said:
            return ToolCalls([("book_appointment", {"service_id": book.haircut, "start": f"{day}T11:30"})])
        if "לבטל" in said:
            return ToolCalls([("cancel_appointment", {})])
        return "איך אפשר לעזור?"

    llm.reply_fn = model
    first = twilio_form(tenant.whatsapp, body="היי, אפשר לקבוע תספורת ביום רביעי ב-11:30?")
    assert post_twilio(wa_client, TWILIO_INBOUND, first).status_code == 204
    wait_for(lambda: [m for m in messages(wa_db, direction="out") if m.body.startswith("קבעתי")], timeout=15)

    with wa_db.scope() as session:
        [appointment] = session.scalars(sa.select(Appointment).where(Appointment.business_id == tenant.business_id))
        assert (appointment.source, appointment.status, appointment.service_id) == ("whatsapp", "booked", book.haircut)
        appointment_id = appointment.id

    second = twilio_form(tenant.whatsapp, body="סליחה, אני צריכה לבטל את התור")
    assert post_twilio(wa_client, TWILIO_INBOUND, second).status_code == 204
    wait_for(lambda: [m for m in messages(wa_db, direction="out") if m.body == "ביטלתי את התור."], timeout=15)
    with wa_db.scope() as session:
        assert session.get(Appointment, appointment_id).status == "cancelled"

    # The customer's notices came through the job queue and the send service, as the replies did.
    sent = wait_for(
        lambda: bodies if len(bodies := [m.body for m in messages(wa_db, direction="out")]) >= 4 else None, timeout=15
    )
    assert any("נקבע" in body for body in sent) and any("בוטל" in body for body in sent)
    replies = wait_for(
        lambda: found if len(found := [r.form["Body"] for r in twilio_api.requests_for("Messages")]) >= 2 else None
    )
    assert replies[0].startswith("קבעתי לך תספורת") and "ביטלתי את התור." in replies

    # The tool calls: rows on the thread, each naming the message it answered, shown by the CRM API.
    inbound = messages(wa_db, direction="in")
    with wa_db.scope() as session:
        rows = list(session.scalars(sa.select(ToolCall).order_by(ToolCall.id)))
        session.expunge_all()
    assert [(r.name, r.channel, r.message_id, r.error) for r in rows] == [
        ("book_appointment", "whatsapp", inbound[0].id, None),
        ("cancel_appointment", "whatsapp", inbound[1].id, None),
    ]
    listed = wa_client.get(f"/api/crm/tool_calls?thread_id={inbound[0].thread_id}", headers=tenant.headers).get_json()
    assert [row["name"] for row in listed["items"]] == ["book_appointment", "cancel_appointment"]
    assert listed["items"][1]["result"]["cancelled"] is True
    # The model was offered the tools, and got their results back as `tool` messages.
    assert {t["function"]["name"] for t in llm.requests[0]["body"]["tools"]} >= {"book_appointment", "take_message"}
    assert "end_call" not in {t["function"]["name"] for t in llm.requests[0]["body"]["tools"]}
    assert [r.get("booked") or r.get("cancelled") for r in llm.tool_results.values()] == [True, True]


def test_a_customer_cannot_cancel_someone_elses_appointment(wa_client, wa_db, tenant, llm, twilio_api):
    with wa_db.scope() as session:
        session.get(Business, tenant.business_id).features = {"wa_auto_reply": True}
    book = set_up_book(wa_db, tenant.business_id)
    from server import appointments

    with wa_db.scope() as session:
        other = appointments.book(
            session,
            tenant.business_id,
            service_id=book.haircut,
            start=f"{next_weekday(3)}T09:00+02:00",
            source="console",
            phone="+972507770000",
        )
        other_id = other.appointment.id
    llm.reply_fn = lambda messages: (
        "אין לך תור כזה."
        if messages[-1]["role"] == "tool"
        else ToolCalls([("cancel_appointment", {"appointment_id": other_id})])
    )
    assert post_twilio(wa_client, TWILIO_INBOUND, twilio_form(tenant.whatsapp, body="תבטלי את התור")).status_code == 204
    wait_for(lambda: [m for m in messages(wa_db, direction="out") if m.body == "אין לך תור כזה."], timeout=15)
    with wa_db.scope() as session:
        assert session.get(Appointment, other_id).status == "booked"
    [result] = llm.tool_results.values()
    assert "no upcoming appointment of this customer" in result["error"]
