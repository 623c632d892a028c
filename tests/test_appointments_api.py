"""`/api/appointments/*` and `GET /calendar/<secret>.ics`: the diary's API end to end, the customer's
WhatsApp notice reaching the providers' fakes (Baileys bridge, Twilio REST) through the job queue,
and the iCalendar feed parsed back with `icalendar`. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import icalendar
import pytest
import sqlalchemy as sa

from server.app_state import services
from server.db.models import Message
from testkit.jobs import InProcessJobs
from tests.appointments_support import ZONE, local, next_weekday, set_up_book
from tests.conftest import add_user, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    TWILIO_INBOUND,
    bridge,
    bridge_server,
    post_twilio,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_env,
)

API = "/api/appointments"
CUSTOMER = "+972501234567"


@pytest.fixture
def appt_app(make_app, wa_env):
    return make_app(**wa_env())


@pytest.fixture
def client(appt_app):
    return appt_app.test_client()


@pytest.fixture
def db(appt_app):
    return services(appt_app).database


@pytest.fixture
def owner(db):
    return create_tenant(db)


@pytest.fixture
def book(db, owner):
    return set_up_book(db, owner.business_id)


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def create(client, owner, book, start, **extra):
    body = {"service_id": book.haircut, "start": start.isoformat(), "phone": "050-1234567", "name": "דנה", **extra}
    return client.post(API, json=body, headers=owner.headers)


# ---- the diary ---------------------------------------------------------------------------------
def test_book_list_move_cancel(client, owner, book):
    sunday = next_weekday(0)
    slots = client.get(f"{API}/slots?service_id={book.haircut}&from={sunday}", headers=owner.headers)
    assert slots.status_code == 200
    assert slots.json["timezone"] == "Asia/Jerusalem"
    first = slots.json["items"][0]
    assert first["local"].startswith(f"{sunday}T09:00:00+0")

    made = create(client, owner, book, local(sunday, "10:00"), notes="קצר מלמעלה", notify=False)
    assert made.status_code == 201, made.json
    appointment = made.json
    assert appointment["customer"]["phone"] == CUSTOMER and appointment["service"]["name"] == "תספורת"
    assert appointment["local_start"] == local(sunday, "10:00").astimezone(ZONE).isoformat()
    assert appointment["source"] == "console"

    day = client.get(f"{API}?from={sunday}", headers=owner.headers)
    assert [a["id"] for a in day.json["items"]] == [appointment["id"]]
    week = client.get(f"{API}?from={sunday - timedelta(days=3)}&days=7", headers=owner.headers)
    assert [a["id"] for a in week.json["items"]] == [appointment["id"]]

    taken = create(client, owner, book, local(sunday, "10:00"), phone="0507654321", notify=False)
    assert taken.status_code == 409 and taken.json["error"] == "slot_taken"
    assert taken.json["alternatives"][0] in (local(sunday, "09:30").isoformat(), local(sunday, "10:30").isoformat())

    moved = client.post(
        f"{API}/{appointment['id']}/move",
        json={"start": local(sunday, "11:00").isoformat(), "notify": False},
        headers=owner.headers,
    )
    assert moved.status_code == 200 and moved.json["starts_at"] == local(sunday, "11:00").isoformat()

    cancelled = client.post(f"{API}/{appointment['id']}/cancel", json={"notify": False}, headers=owner.headers)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert client.get(f"{API}?from={sunday}", headers=owner.headers).json["items"] == []
    with_cancelled = client.get(f"{API}?from={sunday}&include_cancelled=true", headers=owner.headers)
    assert [a["status"] for a in with_cancelled.json["items"]] == ["cancelled"]


def test_settings_services_hours_exceptions(client, owner, db):
    headers = owner.headers
    settings = client.get(f"{API}/settings", headers=headers)
    assert settings.status_code == 200
    assert settings.json["capacity"] == 1 and settings.json["hours"] == [] and settings.json["feed_active"] is False

    assert (
        client.patch(f"{API}/settings", json={"capacity": 3, "slot_minutes": 20}, headers=headers).json["capacity"] == 3
    )
    hours = [{"weekday": 0, "opens": "09:00", "closes": "13:00"}, {"weekday": 0, "opens": "16:00", "closes": "19:00"}]
    assert client.put(f"{API}/hours", json={"hours": hours}, headers=headers).json == {"hours": hours}
    assert client.get(f"{API}/settings", headers=headers).json["hours"] == hours

    service = client.post(
        f"{API}/services", json={"name": "גבות", "duration_minutes": 20, "price": "45.50"}, headers=headers
    )
    assert service.status_code == 201
    assert service.json["price_minor"] == 4550 and service.json["price"] == "45.50"
    changed = client.patch(f"{API}/services/{service.json['id']}", json={"duration_minutes": 25}, headers=headers)
    assert changed.json["duration_minutes"] == 25
    archived = client.delete(f"{API}/services/{service.json['id']}", headers=headers)
    assert archived.json["active"] is False
    assert client.get(f"{API}/services", headers=headers).json["items"] == []
    assert len(client.get(f"{API}/services?include_archived=true", headers=headers).json["items"]) == 1

    day = next_weekday(0).isoformat()
    special = client.put(
        f"{API}/exceptions/{day}",
        json={"closed": False, "opens": "10:00", "closes": "12:00", "note": "ערב חג"},
        headers=headers,
    )
    assert special.status_code == 200 and special.json["opens"] == "10:00"
    listed = client.get(f"{API}/exceptions?days=60", headers=headers).json["items"]
    assert [e["date"] for e in listed] == [day]
    assert client.delete(f"{API}/exceptions/{day}", headers=headers).status_code == 204
    assert client.delete(f"{API}/exceptions/{day}", headers=headers).status_code == 404


def test_roles(client, owner, db, book):
    agent = add_user(db, owner.business_id, "agent")
    sunday = next_weekday(0)
    assert client.get(f"{API}/settings", headers=agent.headers).status_code == 200
    assert create(client, agent, book, local(sunday, "10:00"), notify=False).status_code == 201
    for method, path, body in (
        ("post", f"{API}/services", {"name": "x", "duration_minutes": 30}),
        ("patch", f"{API}/settings", {"capacity": 2}),
        ("put", f"{API}/hours", {"hours": []}),
        ("put", f"{API}/exceptions/{sunday}", {"closed": True}),
        ("post", f"{API}/feed/rotate", None),
    ):
        answer = getattr(client, method)(path, json=body, headers=agent.headers)
        assert answer.status_code == 403, (method, path, answer.json)
    assert client.get(API).status_code == 401


def test_bad_input_and_other_businesses(client, owner, db, book):
    other = create_tenant(db, name="Garage Moshe", phone="+97235550101", whatsapp="+97235550102")
    theirs = set_up_book(db, other.business_id)
    sunday = next_weekday(0)
    their_appointment = create(client, other, theirs, local(sunday, "10:00"), notify=False).json
    h = owner.headers
    cases = [
        (
            client.post(
                API,
                json={"service_id": theirs.haircut, "start": local(sunday, "10:00").isoformat(), "phone": CUSTOMER},
                headers=h,
            ),
            404,
            "not_found",
        ),
        (
            client.post(
                API,
                json={"service_id": 999999, "start": local(sunday, "10:00").isoformat(), "phone": CUSTOMER},
                headers=h,
            ),
            404,
            "not_found",
        ),
        (
            client.post(
                API,
                json={
                    "service_id": book.haircut,
                    "start": local(sunday, "10:00").isoformat(),
                    "customer_id": their_appointment["customer"]["id"],
                },
                headers=h,
            ),
            404,
            "not_found",
        ),
        (client.post(f"{API}/{their_appointment['id']}/cancel", headers=h), 404, "not_found"),
        (
            client.post(
                f"{API}/{their_appointment['id']}/move", json={"start": local(sunday, "12:00").isoformat()}, headers=h
            ),
            404,
            "not_found",
        ),
        (client.get(f"{API}/{their_appointment['id']}", headers=h), 404, "not_found"),
        (client.patch(f"{API}/services/{theirs.haircut}", json={"name": "mine"}, headers=h), 404, "not_found"),
        (client.delete(f"{API}/services/{theirs.haircut}", headers=h), 404, "not_found"),
        (
            client.post(
                API,
                json={
                    "service_id": book.haircut,
                    "start": (local(sunday, "10:00") - timedelta(days=30)).isoformat(),
                    "phone": CUSTOMER,
                },
                headers=h,
            ),
            422,
            "in_the_past",
        ),
        (
            client.post(
                API, json={"service_id": book.haircut, "start": f"{sunday}T10:00:00", "phone": CUSTOMER}, headers=h
            ),
            400,
            "invalid_field",
        ),
        (
            client.post(API, json={"service_id": book.haircut, "start": local(sunday, "10:00").isoformat()}, headers=h),
            400,
            "invalid_field",
        ),
        (
            client.post(
                API, json={"service_id": "1", "start": local(sunday, "10:00").isoformat(), "phone": CUSTOMER}, headers=h
            ),
            400,
            "invalid_field",
        ),
        (
            client.post(API, json={"service_id": book.haircut, "start": 1700000000, "phone": CUSTOMER}, headers=h),
            400,
            "invalid_field",
        ),
        (
            client.post(
                API,
                json={
                    "service_id": book.haircut,
                    "start": local(sunday, "10:00").isoformat(),
                    "phone": CUSTOMER,
                    "extra": 1,
                },
                headers=h,
            ),
            400,
            "invalid_field",
        ),
        (client.post(API, data=b"{not json", headers={**h, "Content-Type": "application/json"}), 400, "invalid_json"),
        (client.get(f"{API}?from=yesterday", headers=h), 400, "invalid_field"),
        (client.get(f"{API}?days=400", headers=h), 400, "invalid_field"),
        (client.get(f"{API}/slots", headers=h), 400, "invalid_field"),
        (client.get(f"{API}/slots?service_id={theirs.haircut}", headers=h), 404, "not_found"),
        (client.put(f"{API}/exceptions/2026-13-01", json={"closed": True}, headers=h), 400, "invalid_field"),
        (
            client.put(
                f"{API}/hours", json={"hours": [{"weekday": 0, "opens": "25:00", "closes": "26:00"}]}, headers=h
            ),
            400,
            "invalid_field",
        ),
        (
            client.post(f"{API}/services", json={"name": "x", "duration_minutes": 30, "price": "1.234"}, headers=h),
            400,
            "invalid_field",
        ),
    ]
    far = {"service_id": book.haircut, "phone": CUSTOMER}
    cases += [
        # Dates near the calendar's ends are refused, never an overflow turned 500.
        (client.get(f"{API}?from=9999-12-31&days=2", headers=h), 400, "invalid_field"),
        (client.get(f"{API}?from=0001-01-01", headers=h), 400, "invalid_field"),
        (client.get(f"{API}/slots?service_id={book.haircut}&from=2199-12-31&days=3", headers=h), 400, "invalid_field"),
        (client.get(f"{API}/exceptions?from=9999-12-31&days=3", headers=h), 400, "invalid_field"),
        (client.put(f"{API}/exceptions/9999-12-31", json={"closed": True}, headers=h), 400, "invalid_field"),
        (client.post(API, json={**far, "start": "9999-12-31T10:00:00+02:00"}, headers=h), 400, "invalid_field"),
        (client.post(API, json={**far, "start": "0001-01-01T00:00:00+14:00"}, headers=h), 400, "invalid_field"),
        (
            client.post(
                API, json={**far, "start": local(sunday.replace(year=sunday.year + 3), "10:00").isoformat()}, headers=h
            ),
            422,
            "too_far_ahead",
        ),
    ]
    for answer, status, code in cases:
        assert (answer.status_code, answer.json.get("error")) == (status, code), (answer.request.path, answer.json)
    # Nothing of business B changed.
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert client.get(f"{API}/{their_appointment['id']}", headers=other.headers).json["status"] == "booked"
    their_services = client.get(f"{API}/services", headers=other.headers).json["items"]
    assert [service["active"] for service in their_services] == [True, True]


# ---- the customer's notice ---------------------------------------------------------------------
def test_notices_reach_the_bridge_in_hebrew_with_local_times(appt_app, client, owner, book, bridge):
    sunday = next_weekday(0)
    with InProcessJobs(appt_app) as jobs:
        made = create(client, owner, book, local(sunday, "10:00"))
        assert made.status_code == 201
        assert wait_for(lambda: len(bridge.accepted) == 1)
        moved = client.post(
            f"{API}/{made.json['id']}/move", json={"start": local(sunday, "14:30").isoformat()}, headers=owner.headers
        )
        assert moved.status_code == 200
        assert wait_for(lambda: len(bridge.accepted) == 2)
        client.post(f"{API}/{made.json['id']}/cancel", headers=owner.headers)
        assert wait_for(lambda: len(bridge.accepted) == 3)
        assert jobs.wait_idle()
    texts = [send.body["text"] for send in bridge.accepted]
    assert {send.body["to"] for send in bridge.accepted} == {CUSTOMER}
    date_text = sunday.strftime("%d.%m.%Y")
    assert texts[0] == f"שלום דנה,\nהתור שלך לתספורת נקבע ליום ראשון {date_text} בשעה 10:00.\nSalon Dana"
    assert texts[1] == f"שלום דנה,\nהתור שלך לתספורת הועבר ליום ראשון {date_text} בשעה 14:30.\nSalon Dana"
    assert texts[2] == f"שלום דנה,\nהתור שלך לתספורת ביום ראשון {date_text} בשעה 14:30 בוטל.\nSalon Dana"


def test_a_slow_whatsapp_does_not_slow_the_booking(appt_app, client, owner, book, bridge):
    bridge.mode = "stall"
    bridge.stall_seconds = 15  # far beyond any booking, even on a loaded machine
    sunday = next_weekday(0)
    with InProcessJobs(appt_app):
        started = time.monotonic()
        made = create(client, owner, book, local(sunday, "10:00"))
        elapsed = time.monotonic() - started
        assert made.status_code == 201 and elapsed < 5.0, elapsed
        assert wait_for(lambda: len(bridge.sends) == 1)
        bridge.release()


def test_twilio_notices_keep_the_24_hour_rule(make_app, wa_env, twilio_api, bridge):
    app = make_app(**wa_env(ENABLE_WA_BAILEYS="false", WA_PROVIDER_PRIORITY="twilio"))
    client, db = app.test_client(), services(app).database
    owner = create_tenant(db)
    book = set_up_book(db, owner.business_id)
    sunday = next_weekday(0)
    with InProcessJobs(app) as jobs:
        # Never wrote to the Twilio number: free-form text may not go out, so the notice is skipped.
        assert create(client, owner, book, local(sunday, "10:00")).status_code == 201
        assert jobs.wait_idle()
        time.sleep(0.3)
        assert twilio_api.requests_for("Messages") == []
        # Wrote within the last 24 hours: the notice goes out through Twilio.
        assert post_twilio(client, TWILIO_INBOUND, twilio_form(owner.whatsapp, from_=CUSTOMER)).status_code == 204
        assert create(client, owner, book, local(sunday, "12:00")).status_code == 201
        assert wait_for(lambda: len(twilio_api.requests_for("Messages")) == 1)
    [request] = twilio_api.requests_for("Messages")
    assert request.form["To"] == f"whatsapp:{CUSTOMER}"
    assert "בשעה 12:00" in request.form["Body"] and "נקבע" in request.form["Body"]


# ---- the calendar feed -------------------------------------------------------------------------
def test_the_feed_parses_back_with_the_booking(client, owner, book):
    sunday = next_weekday(0)
    made = create(client, owner, book, local(sunday, "10:00"), notes="פעם ראשונה", notify=False).json
    assert client.get("/calendar/not-a-secret.ics").status_code == 404
    rotated = client.post(f"{API}/feed/rotate", headers=owner.headers)
    assert rotated.status_code == 200
    url = rotated.json["url"]
    assert url.startswith("https://agent.example.test/calendar/") and url.endswith(".ics")
    path = url.removeprefix("https://agent.example.test")
    feed = client.get(path)
    assert feed.status_code == 200 and feed.mimetype == "text/calendar"
    calendar = icalendar.Calendar.from_ical(feed.data)
    [event] = calendar.walk("VEVENT")
    assert str(event["uid"]) == f"appointment-{made['id']}@agent.example.test"
    assert event["dtstamp"].dt is not None
    start = event.decoded("dtstart")
    assert start == local(sunday, "10:00") and str(start.tzinfo) == "Asia/Jerusalem"
    assert event.decoded("dtend") == local(sunday, "10:30")
    assert str(event["summary"]) == "תספורת – דנה"
    assert "פעם ראשונה" in str(event["description"])
    [zone] = calendar.walk("VTIMEZONE")
    assert str(zone["tzid"]) == "Asia/Jerusalem"
    assert "TZID=Asia/Jerusalem" in feed.data.decode()
    assert client.get(f"{API}/settings", headers=owner.headers).json["feed_active"] is True

    # A move raises SEQUENCE; a cancelled appointment leaves the feed; rotating kills the old link.
    client.post(
        f"{API}/{made['id']}/move",
        json={"start": local(sunday, "11:00").isoformat(), "notify": False},
        headers=owner.headers,
    )
    [event] = icalendar.Calendar.from_ical(client.get(path).data).walk("VEVENT")
    assert event.decoded("dtstart") == local(sunday, "11:00") and int(event["sequence"]) == 1
    client.post(f"{API}/{made['id']}/cancel", json={"notify": False}, headers=owner.headers)
    assert icalendar.Calendar.from_ical(client.get(path).data).walk("VEVENT") == []
    again = client.post(f"{API}/feed/rotate", headers=owner.headers).json["url"]
    assert again != url
    assert client.get(path).status_code == 404
    assert client.get(again.removeprefix("https://agent.example.test")).status_code == 200
