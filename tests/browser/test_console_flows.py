"""The staff console's flows in Chromium: signing in and out, the live inbox, replies and their
delivery states, taking a conversation over from the AI, a call's turns and recording, an invoice
paid through a payment link sent on WhatsApp, a Tranzila payment awaiting confirmation
settled by the owner, the WhatsApp QR code, and what an agent may not reach."""

from __future__ import annotations

import re
import secrets
import struct
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import expect

from server.db.models import AuditLog, Customer, Message, Payment, Thread
from tests.browser.conftest import (
    BUSINESS_VOICE,
    PASSWORD,
    WIDTHS,
    axe_violations,
    new_customer_phone,
    screenshot,
    sign_in,
    wait_until,
)
from tests.crm_seed import seed_call

pytestmark = pytest.mark.slow


# ---- signing in and out -------------------------------------------------------------------------


def test_wrong_password_shows_a_hebrew_error(page, console):
    page.goto("/app/")
    expect(page).to_have_url(re.compile(r"/app/login"))
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    page.get_by_label("אימייל").fill(console.owner_email)
    page.get_by_label("סיסמה").fill("not the password")
    page.get_by_role("button", name="כניסה").click()
    expect(page.get_by_role("alert")).to_have_text("האימייל או הסיסמה שגויים.")
    expect(page.get_by_role("button", name="התנתקות")).to_have_count(0)


def test_sign_in_then_sign_out(page, console):
    sign_in(page, console)
    expect(page).to_have_url(re.compile(r"/app/inbox"))
    expect(page.get_by_role("heading", name="תיבת הודעות")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["al_session"]["httpOnly"] is True
    assert page.evaluate("() => document.cookie").find("al_session") == -1  # the page can't read it
    page.get_by_role("button", name="התנתקות").click()
    expect(page).to_have_url(re.compile(r"/app/login"))
    # The session is gone on the server, not just in the page.
    page.goto("/app/customers")
    expect(page).to_have_url(re.compile(r"/app/login\?next=%2Fapp%2Fcustomers"))


def test_an_expired_session_returns_to_sign_in_and_back_to_the_same_place(page, console):
    sign_in(page, console)
    page.goto("/app/customers?q=%D7%93%D7%A0%D7%94")
    expect(page.get_by_role("heading", name="לקוחות")).to_be_visible()
    console.revoke_sessions(console.owner_id)
    page.get_by_label("חיפוש לקוח").fill("משה")  # the next request finds the session gone
    expect(page).to_have_url(re.compile(r"/app/login\?next=%2Fapp%2Fcustomers"), timeout=5000)
    expect(page.get_by_text("פג תוקף ההתחברות")).to_be_visible()
    page.get_by_label("אימייל").fill(console.owner_email)
    page.get_by_label("סיסמה").fill(PASSWORD)
    page.get_by_role("button", name="כניסה").click()
    expect(page).to_have_url(re.compile(r"/app/customers\?q="))
    expect(page.get_by_role("heading", name="לקוחות")).to_be_visible()


def test_an_agent_cannot_reach_settings(page, console):
    sign_in(page, console, console.agent_email)
    nav = page.get_by_role("navigation", name="ניווט ראשי")
    expect(nav.get_by_role("link", name="תיבת הודעות")).to_be_visible()
    expect(nav.get_by_role("link", name="הגדרות")).to_have_count(0)
    page.goto("/app/settings/users")
    expect(page.get_by_role("heading", name="אין הרשאה")).to_be_visible()
    expect(page.get_by_label("אימייל")).to_have_count(0)
    # The API refuses the agent's cookie session too, whatever the page shows.
    for path in ("/api/crm/users", "/api/crm/payments/gateways", "/api/crm/audit", "/api/crm/whatsapp/connection"):
        response = page.request.get(path)
        assert response.status == 403, (path, response.status, response.text())
    response = page.request.patch("/api/crm/business", data={"name": "x"}, headers={"Origin": console.url})
    assert response.status == 403


# ---- the live inbox -----------------------------------------------------------------------------


def test_an_inbound_whatsapp_message_appears_in_the_open_inbox_without_reload(page, console):
    sign_in(page, console)
    page.evaluate("() => { window.__sameDocument = true; }")
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "שלום, יש תור פנוי מחר?", name="נועה")
    item = page.locator(".thread-item", has_text="נועה")
    expect(item).to_be_visible(timeout=5000)
    expect(item).to_contain_text("שלום, יש תור פנוי מחר?")
    item.click()
    expect(page.get_by_role("heading", name="נועה")).to_be_visible()
    # A second message, handled by whichever of the two workers: it shows in the open conversation.
    for text in ("ואפשר גם בשעה חמש?", "תודה!"):
        console.inbound_whatsapp(customer, text, name="נועה")
        expect(page.locator(".timeline .msg.in", has_text=text)).to_be_visible(timeout=5000)
    assert page.evaluate("() => window.__sameDocument") is True


def test_a_reply_reaches_twilio_and_its_delivery_states_show_live(page, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "מה המחיר של תספורת?", name="יעל")
    sign_in(page, console)
    page.locator(".thread-item", has_text="יעל").click()
    page.get_by_label("תשובה ללקוח").fill("תספורת עולה 120 ₪")
    page.get_by_role("button", name="שליחה").click()
    sent = page.locator(".timeline .msg.out", has_text="תספורת עולה 120 ₪")
    expect(sent).to_be_visible()
    [(sid, message)] = wait_until(lambda: console.twilio_sends_to(customer))
    assert message["body"] == "תספורת עולה 120 ₪"
    expect(sent).to_contain_text("נשלח על ידי את/ה")
    # Twilio reports delivery after its API call has answered, i.e. once the app stored the SID.
    expect(sent.locator(".msg-status")).to_have_attribute("data-status", "sent")
    console.message_status(sid, "delivered", customer)
    expect(sent.locator(".msg-status")).to_have_attribute("data-status", "delivered", timeout=5000)
    expect(sent.locator(".msg-status")).to_have_text(re.compile("נמסרה"))
    console.message_status(sid, "read", customer)
    expect(sent.locator(".msg-status")).to_have_text(re.compile("נקראה"), timeout=5000)


def test_a_failed_send_outside_the_24_hour_window_is_explained_in_hebrew(page, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "היי", name="רותם")
    # The customer wrote two days ago; the bridge (the other way to send) is not connected.
    threads = sa.select(Thread.id).join(Customer, Customer.id == Thread.customer_id).where(Customer.phone == customer)
    console.execute(
        sa.update(Message)
        .where(Message.direction == "in", Message.thread_id.in_(threads))
        .values(created_at=datetime.now(timezone.utc) - timedelta(days=2))
    )
    console.bridge_event({"event": "connection", "state": "close", "qr": False})
    try:
        sign_in(page, console)
        page.locator(".thread-item", has_text="רותם").click()
        page.get_by_label("תשובה ללקוח").fill("שלום רותם")
        page.get_by_role("button", name="שליחה").click()
        alert = page.locator(".composer [role=alert]")
        expect(alert).to_contain_text("24 שעות")
        expect(alert).to_contain_text("תבנית")
    finally:
        console.bridge_event({"event": "connection", "state": "open", "qr": False})


# ---- calls --------------------------------------------------------------------------------------


def _wav(seconds: float) -> bytes:
    """8 kHz mono 16-bit PCM: a quiet tone, so the browser has real audio to decode and play."""
    count = int(8000 * seconds)
    samples = b"".join(struct.pack("<h", 800 if (i // 20) % 2 else -800) for i in range(count))
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(samples))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data"
        + struct.pack("<I", len(samples))
        + samples
    )


def test_a_call_shows_its_turns_with_timing_and_its_recording_plays(page, console):
    caller = new_customer_phone()
    sid = "CA" + secrets.token_hex(16)

    seed_call(
        console.db,
        console.business_id,
        sid=sid,
        caller=caller,
        to=BUSINESS_VOICE,
        transcript="סוכן: שלום\nלקוח: אני רוצה לקבוע תור",
        turns=(("", "שלום, הגעתם למספרת דנה"), ("אני רוצה לקבוע תור", "בשמחה, לאיזה יום?")),
    )
    recording_sid = "RE" + secrets.token_hex(16)
    console.twilio.recordings[recording_sid] = _wav(2.0)
    response = console.twilio_post(
        "/webhook/recording_status",
        {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": sid,
            "RecordingSid": recording_sid,
            "RecordingUrl": console.twilio.recording_url(recording_sid),
            "RecordingStatus": "completed",
            "RecordingDuration": "2",
            "RecordingChannels": "1",
            "RecordingSource": "RecordVerb",
        },
    )
    assert response.status_code == 204
    sign_in(page, console)
    page.get_by_role("link", name="שיחות").click()
    page.locator(f"tr[data-call-sid='{sid}'] a").click()
    expect(page.get_by_role("heading", name=re.compile("שיחה עם"))).to_be_visible()
    turns = page.locator(".turns")
    expect(turns.locator(".msg.in")).to_have_text(re.compile("אני רוצה לקבוע תור"))
    expect(turns.locator(".msg.out").nth(1)).to_contain_text("בשמחה, לאיזה יום?")
    expect(turns.locator(".msg.out").nth(1).locator(".timing")).to_contain_text("עד תחילת התשובה: 700 ms")
    audio = page.locator(".recording audio")
    expect(audio).to_have_attribute("src", f"/api/crm/calls/{sid}/recording")
    page.wait_for_function("() => document.querySelector('.recording audio').readyState >= 1", timeout=10000)
    duration = page.evaluate("() => document.querySelector('.recording audio').duration")
    assert 1.9 <= duration <= 2.1
    page.evaluate("() => document.querySelector('.recording audio').play()")
    page.wait_for_function("() => document.querySelector('.recording audio').currentTime > 0.2", timeout=10000)
    assert console.twilio.requests_for("Recordings", recording_sid)


# ---- payments -----------------------------------------------------------------------------------


def test_an_invoice_payment_link_sent_on_whatsapp_and_paid_shows_paid_without_reload(page, browser, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "אפשר לשלם באשראי?", name="מיכל")
    sign_in(page, console)
    page.get_by_role("link", name="חשבוניות").click()
    page.get_by_role("button", name="חשבונית חדשה").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("כותרת").fill("צבע ותספורת")
    dialog.get_by_label("לקוח").select_option(label="מיכל")
    dialog.get_by_label("סכום (₪)").fill("249.90")
    dialog.get_by_role("button", name="שמירה").click()
    row = page.locator("tr", has_text="צבע ותספורת")
    expect(row).to_contain_text("249.90")
    expect(row).to_contain_text("₪")
    row.get_by_role("button", name=re.compile("^הנפקה")).click()
    expect(row).to_contain_text("הונפקה")
    row.get_by_role("button", name=re.compile("קישור לתשלום")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("ספק תשלום").select_option("paypal")
    expect(dialog.get_by_label("לשלוח ללקוח בוואטסאפ")).to_be_checked()
    dialog.get_by_role("button", name="יצירת קישור").click()
    expect(dialog.get_by_text("הקישור נשלח ללקוח בוואטסאפ")).to_be_visible()
    link = dialog.locator(".payment-result a").get_attribute("href")
    assert link.startswith(console.url + "/pay/")
    expect(dialog.locator(".payment-status")).to_have_text(re.compile("נוצר|ממתין"))
    [(_sid, message)] = wait_until(lambda: console.twilio_sends_to(customer))
    assert link in message["body"]
    # The customer pays on their own phone: PayPal's approval, back to the app, which captures.
    payer = browser.new_page()
    try:
        payer.goto(link)
        expect(payer.locator("body")).to_contain_text("התשלום התקבל", timeout=15000)
    finally:
        payer.close()
    expect(dialog.locator(".payment-status")).to_have_text("שולם", timeout=5000)
    dialog.get_by_role("button", name="סגירה").click()
    expect(row).to_contain_text("שולמה", timeout=5000)


def _api(page, console, method: str, path: str, body: dict) -> dict:
    """The signed-in page's own API call (its session cookie, its Origin)."""
    response = page.request.fetch(path, method=method, data=body, headers={"Origin": console.url})
    assert response.ok, (path, response.status, response.text())
    return response.json()


def _keyless_tranzila_link(page, console, title: str, amount: str) -> tuple[dict, dict]:
    """An issued invoice without a customer and its Tranzila link, on the business's own terminal
    without API keys: the server can't ask Tranzila to confirm what the terminal reports."""
    _api(
        page,
        console,
        "PUT",
        "/api/crm/payments/gateways/tranzila",
        {"enabled": True, "terminal": console.tranzila.terminal, "app_key": None, "secret": None, "mode": "iframe"},
    )
    invoice = _api(page, console, "POST", "/api/crm/invoices", {"title": title, "amount": amount})
    _api(page, console, "POST", f"/api/crm/invoices/{invoice['id']}/status", {"status": "issued"})
    link = _api(
        page, console, "POST", "/api/crm/payments/create", {"provider": "tranzila", "invoice_id": invoice["id"]}
    )
    return invoice, link


def test_a_tranzila_payment_awaiting_confirmation_is_confirmed_by_the_owner_live(page, browser, console):
    sign_in(page, console)

    invoice, link = _keyless_tranzila_link(page, console, "טיפול פנים", "180.00")

    page.goto(f"/app/invoices/{invoice['id']}")
    page.evaluate("() => { window.__sameDocument = true; }")
    item = page.locator("section.payments li", has_text="tranzila")
    expect(item.locator(".badge")).to_have_text("נוצר")
    expect(page.get_by_role("button", name=re.compile("^אישור תשלום"))).to_have_count(0)
    # The payer opens the link, reaches Tranzila's hosted page; Tranzila posts its notification to the app.
    payer = browser.new_page()
    try:
        payer.goto(link["url"])
        expect(payer.locator("body")).to_contain_text("Tranzila")
        notification = console.tranzila.pay(payer.url)
    finally:
        payer.close()
    expect(item.locator(".badge")).to_have_text("ממתין לתשלום", timeout=5000)  # the link was opened
    answer = requests.post(notification.url, data=notification.form, timeout=10)
    assert answer.json() == {"status": "awaiting_confirm"}, answer.text

    expect(item.locator(".badge")).to_have_text("ממתין לאישור", timeout=5000)
    expect(page.locator("dd.doc-status")).to_have_text("הונפקה")
    confirm = page.get_by_role("button", name=re.compile("^אישור תשלום"))
    reject = page.get_by_role("button", name=re.compile("^דחיית תשלום"))
    expect(confirm).to_be_visible()
    expect(reject).to_be_visible()
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width[0], "height": width[1]})
        screenshot(page, f"invoice-awaiting-confirm-{name}")
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})

    # Rejecting asks first; cancelling changes nothing.
    reject.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("דוחות המסוף")
    dialog.get_by_role("button", name="ביטול").click()
    expect(dialog).to_have_count(0)
    expect(item.locator(".badge")).to_have_text("ממתין לאישור")

    confirm.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("הערה (לא חובה)").fill("החיוב מופיע בדוח המסוף")
    screenshot(page, "invoice-confirm-dialog")
    dialog.get_by_role("button", name="אישור התשלום").click()
    expect(page.locator("dd.doc-status")).to_have_text("שולמה", timeout=5000)
    expect(item.locator(".badge")).to_have_text("שולם")
    expect(page.get_by_role("button", name=re.compile("^(אישור|דחיית) תשלום"))).to_have_count(0)
    assert page.evaluate("() => window.__sameDocument") is True
    stored = console.execute(
        sa.select(Payment.status, Payment.provider_txn_id).where(Payment.id == link["payment_id"])
    ).one()
    assert stored == ("paid", notification.form["index"])
    note = console.execute(
        sa.select(AuditLog.details).where(
            AuditLog.entity_type == "payment",
            AuditLog.entity_id == str(link["payment_id"]),
            AuditLog.action == "payment.paid",
        )
    ).scalar_one()["note"]
    assert note == "החיוב מופיע בדוח המסוף"


def test_a_payment_settled_meanwhile_answers_in_hebrew(page, browser, console):
    sign_in(page, console)

    invoice, link = _keyless_tranzila_link(page, console, "מניקור", "90.00")
    hosted_page = requests.get(link["url"], allow_redirects=False, timeout=10).headers["Location"]
    notification = console.tranzila.pay(hosted_page)
    assert requests.post(notification.url, data=notification.form, timeout=10).json() == {"status": "awaiting_confirm"}

    page.goto(f"/app/invoices/{invoice['id']}")
    page.get_by_role("button", name=re.compile("^דחיית תשלום")).click()
    dialog = page.get_by_role("dialog")
    # Another owner rejects it first (on their own screen).
    _api(page, console, "POST", f"/api/crm/payments/{link['payment_id']}/reject", {"note": "not in the report"})
    expect(page.locator("section.payments .badge")).to_have_text("נדחה", timeout=5000)
    dialog.get_by_role("button", name="דחיית התשלום").click()
    expect(dialog.get_by_role("alert")).to_have_text(re.compile("כבר אינו ממתין לאישור"))
    expect(page.locator("dd.doc-status")).to_have_text("הונפקה")


# ---- the WhatsApp connection --------------------------------------------------------------------


def test_the_whatsapp_qr_code_shows_as_an_image_until_connected(page, console):
    console.bridge.state, console.bridge.qr = "connecting", "2@" + secrets.token_urlsafe(60)
    console.bridge_event({"event": "connection", "state": "connecting", "qr": True})
    try:
        sign_in(page, console)
        page.goto("/app/settings/whatsapp")
        image = page.get_by_role("img", name="קוד QR לחיבור וואטסאפ")
        expect(image).to_be_visible()
        page.wait_for_function("() => { const i = document.querySelector('.qr img'); return i && i.naturalWidth > 0; }")
        svg = requests.get(
            console.url + image.get_attribute("src"),
            timeout=5,
            cookies={c["name"]: c["value"] for c in page.context.cookies()},
        )
        assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
        assert any(r.signature_ok for r in console.bridge.qr_requests)
        console.bridge.state, console.bridge.qr = "open", None
        console.bridge_event({"event": "connection", "state": "open", "qr": False})
        expect(page.get_by_role("status").filter(has_text="מצב:")).to_have_text("מצב: מחובר", timeout=10000)
        expect(page.locator(".qr img")).to_have_count(0)
    finally:
        console.bridge.state, console.bridge.qr = "open", None


def test_a_business_without_a_whatsapp_instance_is_told_an_admin_sets_it_up(browser, console):
    # The bridge runs instances for other businesses only: this one sees its own state, no QR code.
    console.bridge.strict = True
    console.bridge.add_instance(console.business_id + 1000, "connecting")
    # bypass_csp: the console runs only its own scripts, and axe-core is injected by the test.
    context = browser.new_context(locale="he-IL", base_url=console.url, bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, console)
        page.goto("/app/settings/whatsapp")
        status = page.get_by_role("status").filter(has_text="מצב:")
        expect(status).to_have_text("מצב: טרם הוגדר לעסק; מנהל המערכת יוסיף אותו", timeout=10000)
        expect(page.locator(".qr img")).to_have_count(0)
        assert axe_violations(page) == []
        screenshot(page, "whatsapp-not-set-up")
        asked = [r.body["business_id"] for r in console.bridge.qr_requests]
        assert set(asked) <= {console.business_id}, "only ever its own business's QR code"
    finally:
        context.close()
        console.bridge.strict = False
        console.bridge.instances.clear()


# ---- working a conversation and customers -------------------------------------------------------


def test_assign_label_and_resolve_a_conversation_then_find_it_by_filters(page, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "שאלה על מחירים", name="אורי")
    sign_in(page, console)
    page.locator(".thread-item", has_text="אורי").click()
    head = page.locator(".conv-head")
    head.get_by_role("button", name="שיוך אליי").click()
    expect(head.get_by_label("משויך ל")).to_have_value(str(console.owner_id))
    head.locator("summary").click()
    head.get_by_label("תוויות (מופרדות בפסיק)").fill("VIP, מחירון")
    head.get_by_role("button", name="שמירת תוויות").click()
    expect(head.locator("summary")).to_contain_text("VIP")
    head.get_by_role("button", name="סימון כטופלה").click()
    expect(head.get_by_label("סטטוס")).to_have_value("resolved")
    filters = page.get_by_role("search")
    filters.get_by_label("סטטוס").select_option("resolved")
    filters.get_by_label("שיוך").select_option("mine")
    item = page.locator(".thread-item", has_text="אורי")
    expect(item).to_be_visible()
    expect(item).to_contain_text("VIP")
    expect(item).to_contain_text("סגורה")
    filters.get_by_label("שיוך").select_option("none")
    expect(item).to_have_count(0)
    # The filters live in the address, so a reload keeps them.
    page.reload()
    expect(page.get_by_role("search").get_by_label("שיוך")).to_have_value("none")


def test_an_agent_sees_colleagues_by_name_not_by_number(page, browser, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "עד מתי אתם פתוחים היום?", name="רונית")
    sign_in(page, console)  # the owner takes the conversation and answers
    page.locator(".thread-item", has_text="רונית").click()
    page.locator(".conv-head").get_by_role("button", name="שיוך אליי").click()
    expect(page.locator(".conv-head").get_by_label("משויך ל")).to_have_value(str(console.owner_id))
    page.get_by_label("תשובה ללקוח").fill("עד שבע בערב")
    page.get_by_role("button", name="שליחה").click()
    expect(page.locator(".timeline .msg.out", has_text="עד שבע בערב")).to_be_visible()

    agent = browser.new_context(base_url=console.url, locale="he-IL").new_page()
    try:
        sign_in(agent, console, console.agent_email)
        item = agent.locator(".thread-item", has_text="רונית")
        expect(item).to_contain_text(console.owner_email)
        item.click()
        expect(agent.locator(".timeline .msg.out", has_text="עד שבע בערב")).to_contain_text(
            f"נשלח על ידי {console.owner_email}"
        )
        assignee = agent.locator(".conv-head").get_by_label("משויך ל")
        expect(assignee).to_have_value(str(console.owner_id))
        expect(assignee.locator("option:checked")).to_have_text(console.owner_email)
        expect(agent.get_by_text("נציג/ה מס׳")).to_have_count(0)
    finally:
        agent.context.close()


def test_taking_a_conversation_over_from_the_ai_survives_a_reload(page, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "אפשר לדבר עם נציג?", name="גלית")
    sign_in(page, console)
    page.locator(".thread-item", has_text="גלית").click()

    def ai_switch():
        return page.locator(".conv-head").get_by_role("switch", name="מענה אוטומטי")

    def paused_in_database() -> bool:
        return console.execute(
            sa.select(Thread.ai_paused)
            .join(Customer, Customer.id == Thread.customer_id)
            .where(Customer.phone == customer, Thread.channel == "whatsapp")
        ).scalar_one()

    expect(ai_switch()).to_have_attribute("aria-checked", "true")
    ai_switch().click()
    expect(ai_switch()).to_have_attribute("aria-checked", "false")
    page.reload()
    expect(ai_switch()).to_have_attribute("aria-checked", "false")
    expect(ai_switch()).to_contain_text("ה-AI מושהה")
    assert paused_in_database() is True
    ai_switch().click()  # hand it back
    expect(ai_switch()).to_have_attribute("aria-checked", "true")
    page.reload()
    expect(ai_switch()).to_have_attribute("aria-checked", "true")
    assert paused_in_database() is False


def test_create_edit_and_find_a_customer_by_phone_in_any_format(page, console):
    phone = new_customer_phone()  # +9725XXXXXXXX
    local = "0" + phone[4:]
    sign_in(page, console)
    page.get_by_role("navigation", name="ניווט ראשי").get_by_role("link", name="לקוחות").click()
    page.get_by_role("button", name="לקוח חדש").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("שם").fill("גלית")
    dialog.get_by_label("טלפון").fill(f"{local[:3]}-{local[3:6]} {local[6:]}")
    dialog.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("heading", name="גלית")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text(f"{local[:3]}-{local[3:6]}-{local[6:]}")
    page.get_by_role("button", name="עריכה").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("שם").fill("גלית ברק")
    dialog.get_by_label("אימייל").fill("not-an-email")
    dialog.get_by_role("button", name="שמירה").click()
    expect(dialog.get_by_role("alert")).to_contain_text("אימייל")  # a Hebrew field error, not raw JSON
    dialog.get_by_label("אימייל").fill("galit@example.test")
    dialog.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("heading", name="גלית ברק")).to_be_visible()
    for typed in (phone, local, phone[1:], local[-7:]):
        page.goto("/app/customers")
        page.get_by_label("חיפוש לקוח").fill(typed)
        expect(page.locator("tbody tr")).to_have_count(1)
        expect(page.locator("tbody tr")).to_contain_text("גלית ברק")
    page.get_by_role("button", name="לקוח חדש").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("טלפון").fill(phone)
    dialog.get_by_role("button", name="שמירה").click()
    expect(dialog.get_by_role("alert")).to_have_text("כבר קיים לקוח עם מספר הטלפון הזה.")


def test_sign_in_by_keyboard_alone(page, console):
    page.goto("/app/login")
    expect(page.get_by_label("אימייל")).to_be_focused()  # the sign-in screen starts in the e-mail field
    page.keyboard.type(console.owner_email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="התנתקות")).to_be_visible()
    # Tabbing from the top reaches the skip link first, and it shows when focused.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="דילוג לתוכן")
    expect(skip).to_be_focused()
    assert skip.bounding_box()["y"] >= 0


def test_a_payment_link_from_a_conversation_is_sent_on_whatsapp(page, console):
    customer = new_customer_phone()
    console.inbound_whatsapp(customer, "כמה עולה פן?", name="שירה")
    sign_in(page, console)
    page.locator(".thread-item", has_text="שירה").click()
    page.get_by_role("button", name="קישור לתשלום").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="יצירה ושליחה בוואטסאפ").click()
    expect(dialog.get_by_role("alert")).to_have_text("יש למלא סכום ותיאור.")
    dialog.get_by_label("סכום (₪)").fill("80")
    dialog.get_by_label("תיאור").fill("פן")
    dialog.get_by_role("button", name="יצירה ושליחה בוואטסאפ").click()
    expect(dialog.get_by_text("הקישור נשלח ללקוח בוואטסאפ")).to_be_visible()
    expect(dialog).to_contain_text("80.00")
    link = dialog.locator(".payment-result a").get_attribute("href")
    [(_sid, message)] = wait_until(lambda: console.twilio_sends_to(customer))
    assert link in message["body"]
    dialog.get_by_role("button", name="סגירה").click()
    # The link's message is part of the conversation, sent by the signed-in person.
    expect(page.locator(".timeline .msg.out", has_text=link)).to_contain_text("נשלח על ידי את/ה", timeout=5000)


def test_the_owner_adds_an_agent_resets_their_password_and_disables_them(page, browser, console):
    email = f"agent-{secrets.token_hex(3)}@salon.example"
    sign_in(page, console)
    page.goto("/app/settings/users")
    page.get_by_role("button", name="הוספת נציג/ה").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("אימייל").fill(email)
    dialog.get_by_label("סיסמה ראשונית").fill("short")
    dialog.get_by_role("button", name="הוספה").click()
    expect(dialog.get_by_role("alert")).to_contain_text("סיסמה")
    dialog.get_by_label("סיסמה ראשונית").fill("first password 1")
    dialog.get_by_role("button", name="הוספה").click()
    row = page.locator("tr", has_text=email)
    expect(row).to_contain_text("נציג/ה")
    expect(row).to_contain_text("פעיל")
    row.get_by_role("button", name=f"איפוס סיסמה: {email}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("סיסמה חדשה").fill("second password 2")
    dialog.get_by_role("button", name="איפוס").click()
    expect(dialog).to_have_count(0)

    agent = browser.new_context(base_url=console.url, locale="he-IL").new_page()
    try:
        agent.goto("/app/login")
        agent.get_by_label("אימייל").fill(email)
        agent.get_by_label("סיסמה").fill("second password 2")
        agent.get_by_role("button", name="כניסה").click()
        expect(agent.get_by_role("button", name="התנתקות")).to_be_visible()
        row.get_by_role("button", name=f"השבתה: {email}").click()
        expect(row).to_contain_text("מושבת")
        # The agent's open session stops working: the next request sends them to sign in. (The
        # live stream's reconnect may already have done so, so the request is a page load, which
        # is there either way, rather than a click on the navigation.)
        agent.goto("/app/customers")
        expect(agent).to_have_url(re.compile(r"/app/login\?next="), timeout=5000)
        agent.get_by_label("אימייל").fill(email)
        agent.get_by_label("סיסמה").fill("second password 2")
        agent.get_by_role("button", name="כניסה").click()
        expect(agent.get_by_role("alert")).to_have_text("החשבון הושבת על ידי בעלי העסק.")
    finally:
        agent.context.close()
