"""The console's switch for preemptive generation in Chromium: on by default, the owner turns it
off (stored as the business's `preemptive_generation` feature) and on again."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from server.db.models import Business
from tests.browser.conftest import axe_violations, screenshot, sign_in

pytestmark = pytest.mark.slow

LABEL = "מענה מהיר בשיחות: ה-AI מתחיל לנסח תשובה עוד לפני סוף התמלול"


@pytest.fixture
def page(axe_page):
    return axe_page


def stored_switch(console) -> object:
    with console.db.scope() as session:
        return (session.get_one(Business, console.business_id).features or {}).get("preemptive_generation")


def test_the_owner_switches_preemptive_generation_off_and_on(page, console):
    sign_in(page, console)
    page.goto("/app/settings/business")
    switch = page.get_by_label(LABEL)
    expect(switch).to_be_checked()  # on by default, though never set
    assert stored_switch(console) is None
    assert axe_violations(page) == []
    switch.scroll_into_view_if_needed()
    screenshot(page, "settings-preemptive-on")

    switch.uncheck()
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("status").filter(has_text="ההגדרות נשמרו")).to_have_count(1)
    assert stored_switch(console) is False
    page.reload()
    expect(page.get_by_label(LABEL)).not_to_be_checked()

    page.get_by_label(LABEL).check()
    page.get_by_role("button", name="שמירה").click()
    expect(page.get_by_role("status").filter(has_text="ההגדרות נשמרו")).to_have_count(1)
    assert stored_switch(console) is True
