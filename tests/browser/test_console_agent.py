"""The console's side of the AI agent's tools in Chromium: the owner switches tools on and off in
Settings → כלים, a message the agent took (`take_message`, the real tool handler) waits in the inbox
as an open task until staff mark it done, and a call's details show the agent's tool calls in its
turns. Each screen is checked with axe and photographed."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from server.agent.tools import ToolBox, ToolContext, enabled_tools
from server.agent_tools import register_all
from server.db.models import Business, Call, Task
from tests.browser.conftest import (
    BUSINESS_VOICE,
    WIDTHS,
    axe_violations,
    new_customer_phone,
    screenshot,
    sign_in,
    wait_until,
)
from tests.conftest import make_settings
from tests.crm_seed import seed_call

pytestmark = pytest.mark.slow

register_all()


@pytest.fixture
def page(axe_page):
    return axe_page


def agent_toolbox(console, sid: str, turn_index: int) -> ToolBox:
    """The tools of one turn of call `sid`, as the live engine builds them (the business's switches)."""
    with console.db.scope() as session:
        call = session.scalar(sa.select(Call).where(Call.call_sid == sid))
        business = session.get(Business, console.business_id)
        call_id, customer_id, caller, switches = call.id, call.customer_id, call.from_number, business.agent_tools
    context = ToolContext(
        business_id=console.business_id,
        channel="call",
        database=console.db,
        settings=make_settings(),
        customer_id=customer_id,
        phone=caller,
        call_sid=sid,
        call_id=call_id,
        turn_index=turn_index,
    )
    return ToolBox(context, enabled_tools(switches, "call"))


def test_the_owner_switches_the_agents_tools(page, console):
    sign_in(page, console)
    page.goto("/app/settings/tools")
    expect(page.get_by_role("heading", name="כלים של ה-AI")).to_be_visible(timeout=20_000)
    payment = page.get_by_label("שליחת קישור לתשלום")
    message = page.get_by_label("השארת הודעה לצוות")
    expect(payment).not_to_be_checked()  # money is opt-in
    expect(message).to_be_checked()
    expect(page.get_by_label("סיום שיחה")).to_be_checked()
    assert axe_violations(page) == []
    screenshot(page, "agent-tools-settings-before")
    payment.check()
    message.uncheck()
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_text("הכלים נשמרו")).to_be_visible(timeout=20_000)

    def stored():
        with console.db.scope() as session:
            return session.get(Business, console.business_id).agent_tools

    switches = wait_until(stored)
    assert switches["send_payment_link"] is True and switches["take_message"] is False
    page.reload()
    expect(page.get_by_label("שליחת קישור לתשלום")).to_be_checked()
    expect(page.get_by_label("השארת הודעה לצוות")).not_to_be_checked()
    for name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        assert axe_violations(page) == []
        screenshot(page, f"agent-tools-settings-{name}")
    # back as it was, for the module's other tests
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_label("השארת הודעה לצוות").check()
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_text("הכלים נשמרו")).to_be_visible(timeout=20_000)


def test_a_message_the_agent_took_waits_in_the_inbox_until_marked_done(page, console):
    caller = new_customer_phone()
    sid = "CA" + secrets.token_hex(16)
    seed_call(console.db, console.business_id, sid=sid, caller=caller, to=BUSINESS_VOICE)
    result = agent_toolbox(console, sid, 1).run(
        "take_message",
        '{"caller_name": "יעל לוי", "reason": "רוצה לברר מחיר לתספורת וצבע לחתונה", "callback_time": "מחר אחרי ארבע"}',
    )
    assert result["ok"] is True

    sign_in(page, console, console.agent_email)  # staff, not only owners, handle the tasks
    tasks = page.get_by_role("region", name="משימות פתוחות")
    task = tasks.get_by_role("listitem").filter(has_text="יעל לוי")
    expect(task).to_contain_text("רוצה לברר מחיר לתספורת וצבע לחתונה", timeout=20_000)
    expect(task).to_contain_text("לחזור: מחר אחרי ארבע")
    expect(task).to_contain_text("מתוך שיחה טלפונית")
    assert axe_violations(page) == []
    screenshot(page, "agent-task-in-inbox")
    task.get_by_role("button", name="סימון כבוצע").click()
    expect(tasks.get_by_role("listitem").filter(has_text="יעל לוי")).to_have_count(0)

    def done():
        with console.db.scope() as session:
            return session.get(Task, result["task_id"]).status == "done"

    wait_until(done)
    with console.db.scope() as session:
        assert session.get(Task, result["task_id"]).done_by_user_id == console.agent_id


def test_a_calls_details_show_the_agents_tool_calls(page, console):
    caller = new_customer_phone()
    sid = "CA" + secrets.token_hex(16)
    seed_call(
        console.db,
        console.business_id,
        sid=sid,
        caller=caller,
        to=BUSINESS_VOICE,
        turns=(("", "שלום, הגעתם למספרת דנה"), ("תשאירי הודעה לדנה", "העברתי את ההודעה לצוות.")),
    )
    box = agent_toolbox(console, sid, 1)
    box.run("take_message", '{"reason": "לחזור ללקוחה לגבי צבע"}')
    box.run("take_message", '{"reason": 5}')  # the model got the arguments wrong: recorded as failed

    sign_in(page, console)
    page.goto(f"/app/calls/{sid}")
    turns = page.get_by_role("region", name="מהלך השיחה")
    calls = turns.locator(".tool-call")
    expect(calls).to_have_count(2, timeout=20_000)
    expect(calls.nth(0)).to_contain_text("פעולה של ה-AI: השארת הודעה לצוות")
    expect(calls.nth(0)).to_contain_text("בוצעה")
    expect(calls.nth(1)).to_contain_text("נכשלה")
    expect(calls.nth(1)).to_contain_text("invalid arguments for take_message")
    calls.nth(0).get_by_text("פרטים").click()
    expect(calls.nth(0).locator("pre")).to_contain_text("לחזור ללקוחה לגבי צבע")
    assert axe_violations(page) == []
    screenshot(page, "agent-tool-calls-in-call")
