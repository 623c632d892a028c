"""The console's appointment diary in a real browser: the book's settings (a service, an exception,
the calendar link), then a day's appointment booked from the free slots, moved and cancelled, and
the week view; axe-core on each screen at 1280 and 360 px, with screenshots to look at."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from server.db.models import Appointment, Customer, OpeningHours, ScheduleException
from tests.appointments_support import local, next_weekday, set_up_book
from tests.browser.conftest import WIDTHS, axe_violations, open_page, screenshot, sign_in, wait_until

SUNDAY = next_weekday(0)


@pytest.fixture(scope="module")
def book(console):
    return set_up_book(console.db, console.business_id, capacity=1, slot_minutes=30)


@pytest.fixture
def owner_page(browser, console, book):
    with open_page(browser, console, bypass_csp=True) as page:  # axe-core is injected by the tests
        sign_in(page, console)
        yield page


def check_screen(page, name: str) -> None:
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        screenshot(page, f"{name}-{width}")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} at {width} px is {overflow} px wider than the window"
        assert axe_violations(page) == [], f"{name} at {width_name}"
    page.set_viewport_size({"width": 1280, "height": 900})


def appointments_of(console, business_id):
    return console.execute(
        sa.select(Appointment.id, Appointment.status, Appointment.starts_at).where(
            Appointment.business_id == business_id
        )
    ).all()


def test_settings_services_exceptions_and_calendar_link(owner_page, console, book):
    page = owner_page
    page.goto("/app/diary/settings")
    page.get_by_role("heading", name="שעות פתיחה").wait_for()
    assert page.get_by_label("ראשון: משעה").input_value() == "09:00"
    check_screen(page, "diary-settings")

    # Friday: open 08:00-13:00; capacity 2.
    page.get_by_label("שישי: פתוח").check()
    page.get_by_label("שישי: משעה").fill("08:00")
    page.get_by_label("שישי: עד שעה", exact=True).fill("13:00")
    page.get_by_role("button", name="שמירת שעות הפתיחה").click()
    page.get_by_text("שעות הפתיחה נשמרו").wait_for()
    friday = console.execute(
        sa.select(OpeningHours.opens_minute, OpeningHours.closes_minute).where(
            OpeningHours.business_id == console.business_id, OpeningHours.weekday == 5
        )
    ).all()
    assert [tuple(row) for row in friday] == [(8 * 60, 13 * 60)]
    page.get_by_label("כמה תורים יכולים לחפוף (אנשי צוות)").fill("2")
    page.get_by_role("button", name="שמירת הקיבולת").click()
    page.get_by_text("הקיבולת נשמרה").wait_for()
    page.get_by_label("כמה תורים יכולים לחפוף (אנשי צוות)").fill("1")
    page.get_by_role("button", name="שמירת הקיבולת").click()
    wait_until(lambda: page.get_by_text("הקיבולת נשמרה").count() == 2)

    page.get_by_role("button", name="שירות חדש").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("שם השירות").fill("פן")
    dialog.get_by_label("משך בדקות").fill("45")
    dialog.get_by_label("מחיר (₪)").fill("60")
    screenshot(page, "diary-service-dialog")
    assert axe_violations(page) == []
    dialog.get_by_role("button", name="שמירה").click()
    page.locator("tr[data-service-id]", has_text="פן").wait_for()

    holiday = next_weekday(3, after_days=40)
    page.get_by_label("תאריך").fill(holiday.isoformat())
    page.get_by_label("הערה").fill("חג")
    page.get_by_role("button", name="הוספת חריגה").click()
    page.locator(f"li[data-date='{holiday.isoformat()}']").wait_for()
    # A short day: open only 10:00-14:00 (the hour fields open up when "closed all day" is unticked).
    short_day = holiday + timedelta(days=1)
    assert page.get_by_label("פתוח משעה").is_disabled()
    page.get_by_label("תאריך").fill(short_day.isoformat())
    page.get_by_label("סגור כל היום").uncheck()
    page.get_by_label("פתוח משעה").fill("10:00")
    page.get_by_label("עד שעה", exact=True).fill("14:00")
    page.get_by_role("button", name="הוספת חריגה").click()
    page.locator(f"li[data-date='{short_day.isoformat()}']", has_text="10:00–14:00").wait_for()
    special = console.execute(
        sa.select(ScheduleException.closed, ScheduleException.opens_minute, ScheduleException.closes_minute).where(
            ScheduleException.business_id == console.business_id, ScheduleException.day == short_day.isoformat()
        )
    ).one()
    assert tuple(special) == (False, 600, 840)

    page.get_by_role("button", name="יצירת קישור").click()
    url = page.get_by_label("קישור היומן").input_value()
    assert url.startswith(console.url + "/calendar/") and url.endswith(".ics")
    feed = requests.get(url, timeout=10)
    assert feed.status_code == 200 and feed.headers["Content-Type"].startswith("text/calendar")
    screenshot(page, "diary-settings-link")


def test_book_move_cancel_in_the_day_and_week_views(owner_page, console, book):
    page = owner_page
    page.goto(f"/app/diary/day?date={SUNDAY.isoformat()}")
    page.get_by_text("אין תורים ביום הזה.").wait_for()
    check_screen(page, "diary-day-empty")

    page.get_by_role("button", name="תור חדש").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("טלפון הלקוח").fill("050-765-4321")
    dialog.get_by_label("שם הלקוח").fill("רונית")
    dialog.get_by_label("שירות", exact=True).select_option(label="תספורת (30 דק׳)")
    dialog.get_by_text("16 שעות פנויות").wait_for()  # the haircut's slots, not the first service's
    dialog.get_by_label("שעה").locator("option", has_text="10:00").wait_for(state="attached")
    dialog.get_by_label("שעה").select_option(label="10:00")
    screenshot(page, "diary-book-dialog")
    assert axe_violations(page) == []
    dialog.get_by_role("button", name="קביעת התור").click()
    row = page.locator("tr[data-appointment-id]", has_text="רונית")
    row.wait_for()
    assert "10:00–10:30" in row.inner_text()
    [(appointment_id, status, starts_at)] = appointments_of(console, console.business_id)
    assert status == "booked"
    check_screen(page, "diary-day")

    row.get_by_role("button", name="העברה").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("שעה חדשה").locator("option", has_text="11:30").wait_for(state="attached")
    dialog.get_by_label("שעה חדשה").select_option(label="11:30")
    dialog.get_by_role("button", name="העברה").click()
    page.locator("tr[data-appointment-id]", has_text="11:30–12:00").wait_for()
    wait_until(lambda: appointments_of(console, console.business_id)[0][2] is not None)
    [(_, status, starts_at)] = appointments_of(console, console.business_id)
    assert starts_at.replace(tzinfo=None) == local(SUNDAY, "11:30").replace(tzinfo=None)

    page.get_by_role("link", name="שבוע").click()
    card = page.locator(f".appt-card[data-appointment-id='{appointment_id}']")
    card.wait_for()
    assert "11:30–12:00" in card.inner_text() and "רונית" in card.inner_text()
    check_screen(page, "diary-week")

    card.get_by_role("button", name="ביטול").click()
    page.locator("dialog").get_by_role("button", name="ביטול התור").click()
    card.wait_for(state="detached")
    [(_, status, _)] = appointments_of(console, console.business_id)
    assert status == "cancelled"


def test_a_taken_slot_is_explained(owner_page, console, book):
    """Two staff pick the same free time; the second is told it is taken and gets fresh slots."""
    page = owner_page
    day = next_weekday(1)
    page.goto(f"/app/diary/day?date={day.isoformat()}")
    page.get_by_role("button", name="תור חדש").click()
    dialog = page.locator("dialog")
    # An existing customer, picked by name: the phone and name fields fill in.
    console.execute(
        sa.insert(Customer).values(business_id=console.business_id, phone="+972501112222", name="שירה לוי", notes="")
    )
    search = dialog.get_by_label("לקוח קיים (חיפוש לפי שם או טלפון)")
    search.fill("שירה")
    dialog.locator("#diary-customers option").first.wait_for(state="attached")
    search.fill(dialog.locator("#diary-customers option").first.get_attribute("value"))
    wait_until(lambda: dialog.get_by_label("טלפון הלקוח").input_value() == "050-111-2222")
    assert dialog.get_by_label("שם הלקוח").input_value() == "שירה לוי"
    dialog.get_by_label("שירות", exact=True).select_option(label="תספורת (30 דק׳)")
    dialog.get_by_text("16 שעות פנויות").wait_for()  # the haircut's slots, not the first service's
    dialog.get_by_label("שעה").locator("option", has_text="09:00").wait_for(state="attached")
    dialog.get_by_label("שעה").select_option(label="09:00")
    # Meanwhile the AI books 09:00 for someone else.
    token_headers = {"Authorization": f"Bearer {_owner_token(console)}"}
    answer = requests.post(
        console.url + "/api/appointments",
        json={
            "service_id": book.haircut,
            "start": local(day, "09:00").isoformat(),
            "phone": "0503334444",
            "notify": False,
        },
        headers=token_headers,
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    dialog.get_by_role("button", name="קביעת התור").click()
    dialog.get_by_text("השעה הזו כבר תפוסה.").wait_for()
    screenshot(page, "diary-slot-taken")
    wait_until(lambda: dialog.get_by_label("שעה").locator("option", has_text="09:00").count() == 0)


def _owner_token(console) -> str:
    from server.db.models import User
    from server.security.auth import issue_token

    with console.db.scope() as session:
        return issue_token(session, session.get(User, console.owner_id))


def test_a_booking_made_elsewhere_appears_live(owner_page, console, book):
    """The AI (here: the API) books while the diary is open: the row appears without a reload."""
    page = owner_page
    day = next_weekday(2)
    page.goto(f"/app/diary/day?date={day.isoformat()}")
    page.get_by_text("אין תורים ביום הזה.").wait_for()
    answer = requests.post(
        console.url + "/api/appointments",
        json={
            "service_id": book.haircut,
            "start": local(day, "13:00").isoformat(),
            "phone": "0505556666",
            "name": "יעל",
            "source": "whatsapp",
            "notify": False,
        },
        headers={"Authorization": f"Bearer {_owner_token(console)}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    row = page.locator("tr[data-appointment-id]", has_text="יעל")
    row.wait_for(timeout=5000)
    assert "13:00–13:30" in row.inner_text() and "וואטסאפ" in row.inner_text()
