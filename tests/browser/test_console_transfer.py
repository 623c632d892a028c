"""The console's call-transfer settings in Chromium: the owner sets the forwarding number (any format,
stored E.164) and the announcement, a wrong number is explained in Hebrew, and a call whose transfer
nobody answered says so in the calls list."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from server.db.models import Business, Call
from tests.browser.conftest import axe_violations, screenshot, sign_in
from tests.crm_seed import seed_call

pytestmark = pytest.mark.slow


@pytest.fixture
def page(axe_page):
    return axe_page


def test_the_owner_sets_where_calls_are_transferred(page, console):
    sign_in(page, console)
    page.goto("/app/settings/business")
    number = page.get_by_label("מספר להעברת שיחות")
    announcement = page.get_by_label("מה ישמע מי שעונה לפני החיבור")
    number.fill("054-abc")
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_text("השדה „מספר להעברת שיחות” אינו תקין.")).to_be_visible()

    number.fill("054-111-2233")
    announcement.fill("שיחה מהעוזרת הדיגיטלית של הסלון")
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("status").filter(has_text="ההגדרות נשמרו")).to_have_count(1)
    with console.db.scope() as session:
        business = session.get_one(Business, console.business_id)
        assert business.transfer_number == "+972541112233"
        assert business.transfer_announcement == "שיחה מהעוזרת הדיגיטלית של הסלון"

    page.reload()
    expect(page.get_by_label("מספר להעברת שיחות")).to_have_value("+972541112233")
    assert axe_violations(page) == []
    page.get_by_role("heading", name="העברת שיחה לנציג").scroll_into_view_if_needed()
    screenshot(page, "settings-transfer")

    number = page.get_by_label("מספר להעברת שיחות")
    number.fill("")
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("status").filter(has_text="ההגדרות נשמרו")).to_have_count(1)
    with console.db.scope() as session:
        assert session.get_one(Business, console.business_id).transfer_number is None


def test_an_unanswered_transfer_shows_in_the_calls_list(page, console):
    sid = "CA" + secrets.token_hex(16)
    seed_call(console.db, console.business_id, sid=sid, caller="+972508887766")
    with console.db.scope() as session:
        session.scalar(sa.select(Call).where(Call.call_sid == sid)).outcome = "transfer_no_answer"
    sign_in(page, console)
    page.goto("/app/calls")
    expect(page.get_by_text("הועברה לנציג ולא נענתה").first).to_be_visible()
    screenshot(page, "calls-transfer-no-answer")
