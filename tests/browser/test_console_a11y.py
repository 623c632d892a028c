"""Every screen of the console at 1280 px and at 360 px: axe-core finds no serious or critical
violation, nothing is wider than the window, and a screenshot of each is saved under
test-output/screenshots/ for a person to look at.

On PostgreSQL only: what is checked here is the markup and the layout, which no database changes
(the flows in test_console_flows.py run on both)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from server.db.dao_crm import insert_message, upsert_customer, upsert_thread
from server.db.models import Contract, Deal, Invoice, Thread
from tests.browser.conftest import WIDTHS, axe_violations, new_customer_phone, open_page, screenshot, sign_in
from tests.crm_seed import seed_call

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("console", ["postgresql"], indirect=True)]


@pytest.fixture(scope="module")
def seeded(console):
    """A little of everything, so that no screen is empty."""
    now = datetime.now(timezone.utc)
    people = [("דנה כהן", new_customer_phone()), ("משה לוי", new_customer_phone()), ("", new_customer_phone())]
    ids = {}
    with console.db.scope() as session:
        for index, (name, phone) in enumerate(people):
            customer = upsert_customer(session, console.business_id, phone=phone, name=name or None)
            thread = upsert_thread(session, console.business_id, customer.id, "whatsapp")
            for minutes, direction, body in (
                (30, "in", "שלום, אפשר לקבוע תור ליום שלישי?"),
                (29, "out", "בטח! באיזו שעה נוח לך?"),
                (5, "in", "בארבע אחר הצהריים, אם אפשר"),
            ):
                message, _ = insert_message(
                    session,
                    thread,
                    direction=direction,
                    body=body,
                    provider="twilio",
                    provider_message_id="SM" + secrets.token_hex(16),
                    at=now - timedelta(minutes=minutes + index * 60),
                )
                if direction == "out":
                    message.status = "read"
            ids.setdefault("thread", thread.id)
            ids.setdefault("customer", customer.id)
            session.add_all(
                [
                    Deal(
                        business_id=console.business_id,
                        customer_id=customer.id,
                        title="חבילת טיפולים",
                        amount_minor=60000,
                        status="open",
                    ),
                    Invoice(
                        business_id=console.business_id,
                        customer_id=customer.id,
                        title="תספורת וצבע",
                        amount_minor=24990,
                        status="issued",
                        number=f"2025-{index + 1:03d}",
                    ),
                    Contract(
                        business_id=console.business_id,
                        customer_id=customer.id,
                        title="הסכם מנוי שנתי",
                        amount_minor=120000,
                        status="draft",
                        body="תנאי המנוי…",
                    ),
                ]
            )
        session.flush()
        ids["invoice"] = session.scalar(
            sa.select(Invoice.id).where(Invoice.business_id == console.business_id).order_by(Invoice.id)
        )
        failed = session.scalar(sa.select(Thread).where(Thread.id == ids["thread"]))
        message, _ = insert_message(
            session,
            failed,
            direction="out",
            body="תזכורת: התור שלך מחר",
            provider="twilio",
            provider_message_id="SM" + secrets.token_hex(16),
        )
        message.status, message.error_code, message.error_message = "failed", "63016", "outside the window"
    sid = "CA" + secrets.token_hex(16)
    seed_call(
        console.db,
        console.business_id,
        sid=sid,
        caller=people[0][1],
        transcript="סוכן: שלום\nלקוח: אני רוצה לקבוע תור",
        turns=(
            ("", "שלום, הגעתם למספרת דנה. במה אפשר לעזור?"),
            ("אני רוצה לקבוע תור לתספורת", "בשמחה. לאיזה יום?"),
            ("מחר בבוקר", "יש מקום בעשר. לקבוע?"),
        ),
    )
    ids["call"] = sid
    return ids


@pytest.fixture(scope="module")
def owner_page(browser, console, seeded):
    with open_page(browser, console, bypass_csp=True) as page:  # axe-core is injected by the tests
        sign_in(page, console)
        yield page


SCREENS = {
    "inbox": ("/app/inbox?status=all", ".thread-item"),
    "conversation": ("/app/inbox/{thread}?status=all", ".timeline .msg"),
    "calls": ("/app/calls", "table.list"),
    "call": ("/app/calls/{call}", ".turns .msg"),
    "customers": ("/app/customers", "table.list"),
    "customer": ("/app/customers/{customer}", "section.related"),
    "deals": ("/app/deals", "table.list"),
    "invoices": ("/app/invoices", "table.list"),
    "invoice": ("/app/invoices/{invoice}", "dl.facts"),
    "contracts": ("/app/contracts", "table.list"),
    "settings-business": ("/app/settings/business", "form.settings-form"),
    "settings-payments": ("/app/settings/payments", "form.gateway"),
    "settings-whatsapp": ("/app/settings/whatsapp", ".wa-status"),
    "settings-users": ("/app/settings/users", "table.list"),
    "settings-audit": ("/app/settings/audit", "table.list, .empty"),
}


def _check(page, name: str) -> None:
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(100)
        screenshot(page, f"{name}-{width}")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} at {width} px is {overflow} px wider than the window"
        assert axe_violations(page) == [], f"{name} at {width_name}"
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.mark.parametrize("name", list(SCREENS))
def test_screen_is_accessible_at_both_widths(owner_page, seeded, name):
    path, ready = SCREENS[name]
    owner_page.goto(path.format(**seeded))
    owner_page.locator(ready).first.wait_for()
    owner_page.wait_for_timeout(300)  # the rest of the screen's requests (lists fill in parallel)
    _check(owner_page, name)


def test_sign_in_screen_is_accessible(browser, console):
    context = browser.new_context(locale="he-IL", base_url=console.url, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto("/app/login")
        expect(page.get_by_role("button", name="כניסה")).to_be_visible()
        page.get_by_role("button", name="כניסה").click()  # the empty-form error is part of the screen
        expect(page.get_by_role("alert")).to_be_visible()
        _check(page, "login")
    finally:
        context.close()


def test_payment_link_dialog_is_accessible(owner_page, seeded):
    owner_page.goto(f"/app/inbox/{seeded['thread']}")
    owner_page.get_by_role("button", name="קישור לתשלום").click()
    expect(owner_page.get_by_role("dialog")).to_be_visible()
    _check(owner_page, "payment-dialog")
    owner_page.keyboard.press("Escape")
    expect(owner_page.get_by_role("dialog")).to_have_count(0)
