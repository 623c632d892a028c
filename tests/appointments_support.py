"""Shared pieces of the appointment tests: a business's book set up with services and hours, and dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from server import appointments

ZONE = ZoneInfo("Asia/Jerusalem")
WORKING_WEEK = [{"weekday": day, "opens": "09:00", "closes": "17:00"} for day in range(0, 5)]  # Sunday-Thursday


def next_weekday(weekday: int, *, after_days: int = 14) -> date:
    """A date at least `after_days` from today that is `weekday` (0 = Sunday)."""
    day = date.today() + timedelta(days=after_days)
    while (day.weekday() + 1) % 7 != weekday:
        day += timedelta(days=1)
    return day


def local(day: date, hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=ZONE).astimezone(timezone.utc)


@dataclass
class Book:
    business_id: int
    haircut: int  # 30 minutes
    color: int  # 90 minutes


def set_up_book(db, business_id: int, *, capacity: int = 1, slot_minutes: int = 30) -> Book:
    with db.scope() as session:
        appointments.update_book(session, business_id, {"capacity": capacity, "slot_minutes": slot_minutes})
        appointments.set_weekly_hours(session, business_id, WORKING_WEEK)
        haircut = appointments.create_service(
            session, business_id, {"name": "תספורת", "duration_minutes": 30, "price": "80.00"}
        )
        color = appointments.create_service(
            session, business_id, {"name": "צבע", "duration_minutes": 90, "price": "250.00"}
        )
        return Book(business_id, haircut.id, color.id)
