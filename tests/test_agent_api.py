"""The CRM side of the agent's tools: tasks it took for staff (listed, marked done), its tool-call rows
(in a call's details and by call or thread), and the per-business tool switches (owners only),
with bad input and another business's data answered by clear 4xx errors."""

from __future__ import annotations

import random

from server.agent.tools import ToolBox, ToolContext, enabled_tools, tool_named
from server.agent_tools import register_all
from server.db.dao_crm import create_call, upsert_customer, upsert_thread
from server.db.models import Business
from tests.conftest import add_user, make_settings

register_all()


def a_call(db, tenant, phone: str = "+972501112233") -> tuple[str, int, int]:
    """A call from a known customer: (call_sid, call_id, customer_id)."""
    sid = f"CA{random.getrandbits(128):032x}"
    with db.scope() as session:
        call, _ = create_call(
            session, tenant.business_id, call_sid=sid, from_number=phone, to_number=tenant.phone, status="in-progress"
        )
        return sid, call.id, call.customer_id


def toolbox_for_call(db, tenant, sid: str, call_id: int, customer_id: int, phone: str) -> ToolBox:
    context = ToolContext(
        business_id=tenant.business_id,
        channel="call",
        database=db,
        settings=make_settings(),
        customer_id=customer_id,
        phone=phone,
        call_sid=sid,
        call_id=call_id,
        turn_index=1,
    )
    return ToolBox(context, enabled_tools(None, "call"))


def test_take_message_leaves_a_task_staff_see_and_mark_done(client, db, tenant, other_tenant):
    sid, call_id, customer_id = a_call(db, tenant)
    box = toolbox_for_call(db, tenant, sid, call_id, customer_id, "+972501112233")
    result = box.run(
        "take_message",
        '{"caller_name": "רונית כהן", "reason": "רוצה לשאול על צבע לשיער", "callback_time": "מחר בבוקר"}',
    )
    assert result["ok"] is True

    listed = client.get("/api/crm/tasks", headers=tenant.headers).get_json()["items"]
    [task] = listed
    assert task["id"] == result["task_id"] and task["status"] == "open" and task["call_id"] == call_id
    assert (task["caller_name"], task["reason"], task["callback_time"]) == (
        "רונית כהן",
        "רוצה לשאול על צבע לשיער",
        "מחר בבוקר",
    )
    assert task["customer"] == {"id": customer_id, "name": "רונית כהן", "phone": "+972501112233"}
    assert client.get("/api/crm/tasks", headers=other_tenant.headers).get_json()["items"] == []

    agent = add_user(db, tenant.business_id, "agent")
    done = client.patch(f"/api/crm/tasks/{task['id']}", json={"status": "done"}, headers=agent.headers)
    assert done.status_code == 200 and done.get_json()["status"] == "done"
    assert done.get_json()["done_by_user_id"] == agent.user_id and done.get_json()["done_at"]
    assert client.get("/api/crm/tasks", headers=tenant.headers).get_json()["items"] == []
    assert [t["id"] for t in client.get("/api/crm/tasks?status=done", headers=tenant.headers).get_json()["items"]] == [
        task["id"]
    ]

    # another business's task, bad input
    assert (
        client.patch(f"/api/crm/tasks/{task['id']}", json={"status": "done"}, headers=other_tenant.headers).status_code
        == 404
    )
    assert client.patch("/api/crm/tasks/999999", json={"status": "done"}, headers=tenant.headers).status_code == 404
    for body in ({"status": "maybe"}, {"status": "done", "x": 1}, {}):
        answer = client.patch(f"/api/crm/tasks/{task['id']}", json=body, headers=tenant.headers)
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_field"
    broken = client.patch(
        f"/api/crm/tasks/{task['id']}", data="{", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and broken.get_json()["error"] == "invalid_json"
    assert client.get("/api/crm/tasks?status=nope", headers=tenant.headers).status_code == 400
    assert client.get("/api/crm/tasks").status_code == 401


def test_take_message_refuses_a_bad_phone_and_invalid_arguments(db, tenant):
    sid, call_id, customer_id = a_call(db, tenant)
    box = toolbox_for_call(db, tenant, sid, call_id, customer_id, "+972501112233")
    assert "not valid" in box.run("take_message", '{"reason": "x", "phone": "12"}')["error"]
    assert "'reason' is a required property" in box.run("take_message", '{"caller_name": "דנה"}')["error"]
    assert "invalid arguments" in box.run("take_message", '{"reason": ""}')["error"]


def test_tool_calls_show_in_the_call_details_and_by_call_or_thread(client, db, tenant, other_tenant):
    sid, call_id, customer_id = a_call(db, tenant)
    box = toolbox_for_call(db, tenant, sid, call_id, customer_id, "+972501112233")
    box.run("take_message", '{"reason": "להתקשר בחזרה"}')
    box.run("take_message", "{oops")
    detail = client.get(f"/api/crm/calls/{sid}", headers=tenant.headers).get_json()
    first, second = detail["tool_calls"]
    assert (first["name"], first["turn_index"], first["error"]) == ("take_message", 1, None)
    assert first["arguments"] == {"reason": "להתקשר בחזרה"} and first["result"]["ok"] is True
    assert first["duration_ms"] >= 0 and first["started_at"] <= first["finished_at"]
    assert second["arguments"] is None and "not valid JSON" in second["error"]
    by_call = client.get(f"/api/crm/tool_calls?call_sid={sid}", headers=tenant.headers).get_json()["items"]
    assert [row["id"] for row in by_call] == [first["id"], second["id"]]

    # WhatsApp: the rows name the thread
    with db.scope() as session:
        customer = upsert_customer(session, tenant.business_id, phone="+972509998877")
        thread = upsert_thread(session, tenant.business_id, customer.id, "whatsapp")
        thread_id, wa_customer = thread.id, customer.id
    context = ToolContext(
        business_id=tenant.business_id,
        channel="whatsapp",
        database=db,
        settings=make_settings(),
        customer_id=wa_customer,
        phone="+972509998877",
        thread_id=thread_id,
    )
    ToolBox(context, enabled_tools(None, "whatsapp")).run("take_message", '{"reason": "שאלה"}')
    by_thread = client.get(f"/api/crm/tool_calls?thread_id={thread_id}", headers=tenant.headers).get_json()["items"]
    assert [(r["channel"], r["thread_id"]) for r in by_thread] == [("whatsapp", thread_id)]

    assert client.get(f"/api/crm/tool_calls?call_sid={sid}", headers=other_tenant.headers).status_code == 404
    assert client.get(f"/api/crm/tool_calls?thread_id={thread_id}", headers=other_tenant.headers).status_code == 404
    for query in ("", f"?call_sid={sid}&thread_id={thread_id}", "?thread_id=abc", "?thread_id=99999999999"):
        assert client.get(f"/api/crm/tool_calls{query}", headers=tenant.headers).status_code == 400


def test_owners_switch_tools_on_and_off(client, db, tenant, other_tenant):
    tools = {t["name"]: t for t in client.get("/api/crm/agent_tools", headers=tenant.headers).get_json()["tools"]}
    assert tools["take_message"]["enabled"] and not tools["send_payment_link"]["enabled"]
    assert tools["end_call"]["channels"] == ["call"] and tools["book_appointment"]["label"] == "קביעת תור"

    changed = client.put(
        "/api/crm/agent_tools",
        json={"tools": {"send_payment_link": True, "take_message": False}},
        headers=tenant.headers,
    )
    assert changed.status_code == 200
    now = {t["name"]: t["enabled"] for t in changed.get_json()["tools"]}
    assert now["send_payment_link"] and not now["take_message"] and now["end_call"]
    with db.scope() as session:
        stored = session.get(Business, tenant.business_id).agent_tools
    assert stored == {"send_payment_link": True, "take_message": False}
    names = {t.name for t in enabled_tools(stored, "call")}
    assert "send_payment_link" in names and "take_message" not in names
    # a later change keeps the earlier ones; other businesses are untouched
    client.put("/api/crm/agent_tools", json={"tools": {"end_call": False}}, headers=tenant.headers)
    with db.scope() as session:
        assert session.get(Business, tenant.business_id).agent_tools == {
            "send_payment_link": True,
            "take_message": False,
            "end_call": False,
        }
        assert session.get(Business, other_tenant.business_id).agent_tools is None
    assert tool_named("end_call") is not None

    agent = add_user(db, tenant.business_id, "agent")
    assert (
        client.put("/api/crm/agent_tools", json={"tools": {"end_call": True}}, headers=agent.headers).status_code == 403
    )
    assert client.get("/api/crm/agent_tools", headers=agent.headers).status_code == 200
    for body in ({"tools": {"nope": True}}, {"tools": {"end_call": "yes"}}, {"tools": {}}, {"tools": []}, {"x": 1}):
        answer = client.put("/api/crm/agent_tools", json=body, headers=tenant.headers)
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_field", body


def test_a_payment_link_for_a_services_price_is_made_once_per_call_even_when_whatsapp_cannot_send(db, tenant):
    from server import appointments
    from server.db.models import Payment

    with db.scope() as session:
        session.get(Business, tenant.business_id).payments_enabled = True
        service = appointments.create_service(
            session, tenant.business_id, {"name": "צבע", "duration_minutes": 90, "price": "250.00"}
        )
        service_id = service.id
    sid, call_id, customer_id = a_call(db, tenant)
    settings = make_settings(PAYPAL_CLIENT_ID="id", PAYPAL_CLIENT_SECRET="secret", PAYPAL_WEBHOOK_ID="WH-1")
    context = ToolContext(
        business_id=tenant.business_id,
        channel="call",
        database=db,
        settings=settings,
        customer_id=customer_id,
        phone="+972501112233",
        call_sid=sid,
        call_id=call_id,
    )
    box = ToolBox(context, enabled_tools({"send_payment_link": True}, "call"))
    first = box.run("send_payment_link", f'{{"service_id": {service_id}}}')
    again = box.run("send_payment_link", f'{{"service_id": {service_id}}}')
    # No WhatsApp provider is set up here: the link exists, the model is told it was not sent.
    assert first["sent"] is False and "could not be sent" in first["error"]
    assert again["payment_id"] == first["payment_id"]
    with db.scope() as session:
        payment = session.get(Payment, first["payment_id"])
        assert (payment.amount_minor, payment.currency, payment.description) == (25000, "ILS", "צבע")
        assert payment.customer_id == customer_id
    assert "no such service" in box.run("send_payment_link", '{"service_id": 999999}')["error"]
    assert (
        "invalid arguments" in box.run("send_payment_link", f'{{"service_id": {service_id}, "invoice_id": 1}}')["error"]
    )
    assert "no open invoice" in box.run("send_payment_link", "{}")["error"]
