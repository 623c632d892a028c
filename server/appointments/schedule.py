"""The book's settings: services, weekly opening hours, exceptions (closed days, special hours) and
the book itself (capacity, the slot grid). Plain functions over a session; each refusal is one
`DomainError`. Writes flush but don't commit: the caller (a route, a tool) owns the transaction.

Times of day are local wall-clock times of the business (`Business.timezone`) written "HH:MM";
weekdays are 0 = Sunday … 6 = Saturday (the Israeli week; JavaScript's `getDay()`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import money
from server.db.models import AppointmentBook, AppointmentService, Business, OpeningHours, ScheduleException
from server.errors import DomainError, Problem
from server.text import clean_text

UNIT_MINUTES = 5  # the seat grid: durations and the slot grid are whole multiples of it
MAX_DURATION_MINUTES = 12 * 60
MAX_CAPACITY = 50
SLOT_MINUTES_CHOICES = (5, 10, 15, 20, 30, 60)
NAME_MAX = 200
NOTE_MAX = 200
MAX_INTERVALS_PER_DAY = 4
TIME_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
# The dates the book knows: far wider than any diary needs, and far from datetime's limits, so date
# arithmetic on a client's date (a week on, a zone's offset) can't overflow.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2199, 12, 31)
_TIME, _DAY = re.compile(TIME_PATTERN, re.ASCII), re.compile(DAY_PATTERN, re.ASCII)


def invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)


def not_found(what: str) -> DomainError:
    return DomainError(Problem.NOT_FOUND, "not_found", f"no such {what}")


# ---- small parsers -----------------------------------------------------------------------------
def parse_time(value: Any, field: str) -> int:
    """ "09:30" → 570 minutes after local midnight ("24:00" is the end of the day)."""
    if not isinstance(value, str) or not _TIME.match(value):
        raise invalid(field, f"{field} must be a time HH:MM (00:00-24:00)")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def time_text(minute: int) -> str:
    """570 → "09:30"."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_day(value: Any, field: str = "date") -> date:
    """ "2026-05-03" → a date (between FIRST_DAY and LAST_DAY), or INVALID naming `field`."""
    if not isinstance(value, str) or not _DAY.match(value):
        raise invalid(field, f"{field} must be a date YYYY-MM-DD")
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise invalid(field, f"{field} must be a date YYYY-MM-DD") from None
    if not FIRST_DAY <= parsed <= LAST_DAY:
        raise invalid(field, f"{field} must be between {FIRST_DAY} and {LAST_DAY}")
    return parsed


def _whole_number(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(field, f"{field} must be a whole number from {low} to {high}")
    return value


def _reject_unknown(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _interval(opens: int, closes: int, field: str) -> tuple[int, int]:
    if closes <= opens:
        raise invalid(field, "closes must be later than opens")
    if opens % UNIT_MINUTES or closes % UNIT_MINUTES:
        raise invalid(field, f"opening hours must be on a {UNIT_MINUTES}-minute grid")
    return opens, closes


# ---- the business and its zone -----------------------------------------------------------------
def business_zone(session: Session, business_id: int) -> ZoneInfo:
    """The business's time zone (`Business.timezone`): NOT_FOUND for no business, UNPROCESSABLE for
    a zone zoneinfo doesn't know."""
    business = session.get(Business, business_id)
    if business is None:
        raise not_found("business")
    try:
        return ZoneInfo(business.timezone or "Asia/Jerusalem")
    except (ZoneInfoNotFoundError, ValueError):
        raise DomainError(
            Problem.UNPROCESSABLE, "bad_timezone", f"the business's time zone {business.timezone!r} is unknown"
        ) from None


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of local `day`, in UTC."""
    return datetime.combine(day, time(), zone).astimezone(timezone.utc)


def local_instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """Local wall-clock `minute` of `day`, in UTC. A time a DST change skips is read with the offset
    before the change (zoneinfo's fold=0), so it lands just after the jump; a repeated hour's first."""
    if minute >= 24 * 60:
        return local_midnight(day + timedelta(days=1), zone)
    return datetime.combine(day, time(minute // 60, minute % 60), zone).astimezone(timezone.utc)


# ---- the book (capacity, slot grid) ------------------------------------------------------------
def get_book(session: Session, business_id: int, *, for_update: bool = False) -> AppointmentBook:
    """The business's book, made with the defaults (capacity 1, 15-minute grid) on first use."""
    stmt = sa.select(AppointmentBook).where(AppointmentBook.business_id == business_id)
    if for_update:
        stmt = stmt.with_for_update()
    book = session.scalar(stmt)
    if book is not None:
        return book
    if session.get(Business, business_id) is None:
        raise not_found("business")
    try:
        with session.begin_nested():
            book = AppointmentBook(business_id=business_id, capacity=1, slot_minutes=15)
            session.add(book)
    except IntegrityError:  # made by a concurrent first use
        book = session.scalar(stmt)
        assert book is not None
    return book


@dataclass(frozen=True)
class BookSettings:
    capacity: int
    slot_minutes: int
    timezone: str
    feed_active: bool
    feed_rotated_at: Optional[datetime]

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "slot_minutes": self.slot_minutes,
            "timezone": self.timezone,
            "feed_active": self.feed_active,
            "feed_rotated_at": self.feed_rotated_at.isoformat() if self.feed_rotated_at else None,
        }


def book_settings(session: Session, business_id: int) -> BookSettings:
    """Capacity, the slot grid, the business's time zone and whether a calendar feed link exists."""
    book = get_book(session, business_id)
    business = session.get(Business, business_id)
    assert business is not None
    return BookSettings(
        book.capacity, book.slot_minutes, business.timezone, book.feed_token_hash is not None, book.feed_rotated_at
    )


def update_book(session: Session, business_id: int, body: Mapping[str, Any]) -> BookSettings:
    """Change `capacity` (1-50: how many appointments may overlap) and/or `slot_minutes` (the grid
    free starts are offered on: 5, 10, 15, 20, 30 or 60). Lowering the capacity leaves appointments
    already booked in place; it only limits new ones."""
    if not isinstance(body, Mapping):
        raise DomainError(Problem.INVALID, "invalid_body", "the body must be a JSON object")
    _reject_unknown(body, ("capacity", "slot_minutes"))
    book = get_book(session, business_id, for_update=True)
    if "capacity" in body:
        book.capacity = _whole_number(body["capacity"], "capacity", 1, MAX_CAPACITY)
    if "slot_minutes" in body:
        value = body["slot_minutes"]
        if isinstance(value, bool) or value not in SLOT_MINUTES_CHOICES:
            raise invalid("slot_minutes", f"slot_minutes must be one of {', '.join(map(str, SLOT_MINUTES_CHOICES))}")
        book.slot_minutes = value
    session.flush()
    return book_settings(session, business_id)


# ---- services ----------------------------------------------------------------------------------
def service_json(service: AppointmentService) -> dict[str, Any]:
    """A service as the API shows it (the price also as a decimal string)."""
    return {
        "id": service.id,
        "name": service.name,
        "duration_minutes": service.duration_minutes,
        "price_minor": service.price_minor,
        "price": money.major_text(service.price_minor),
        "currency": service.currency,
        "active": service.active,
    }


def list_services(session: Session, business_id: int, *, include_archived: bool = False) -> list[AppointmentService]:
    """The business's services by name; archived ones only with `include_archived`."""
    stmt = sa.select(AppointmentService).where(AppointmentService.business_id == business_id)
    if not include_archived:
        stmt = stmt.where(AppointmentService.active.is_(True))
    return list(session.scalars(stmt.order_by(AppointmentService.name, AppointmentService.id)))


def get_service(
    session: Session, business_id: int, service_id: Any, *, active_only: bool = False
) -> AppointmentService:
    """The business's service, or NOT_FOUND (also another business's, and an archived one when
    `active_only`: nothing new may be booked on it)."""
    if isinstance(service_id, bool) or not isinstance(service_id, int) or not 1 <= service_id <= 2**31 - 1:
        raise not_found("service")
    service = session.scalar(
        sa.select(AppointmentService).where(
            AppointmentService.business_id == business_id, AppointmentService.id == service_id
        )
    )
    if service is None or (active_only and not service.active):
        raise not_found("service")
    return service


def _service_fields(service: AppointmentService, body: Mapping[str, Any], *, creating: bool) -> None:
    if not isinstance(body, Mapping):
        raise DomainError(Problem.INVALID, "invalid_body", "the body must be a JSON object")
    _reject_unknown(body, ("name", "duration_minutes", "price", "price_minor", "currency", "active"))
    if creating:
        for field in ("name", "duration_minutes"):
            if body.get(field) is None:
                raise invalid(field, f"{field} is required")
    if "name" in body:
        service.name = clean_text(body["name"], "name", max_length=NAME_MAX, allow_empty=False).strip()
        if not service.name:
            raise invalid("name", "name must not be blank")
    if "duration_minutes" in body:
        minutes = _whole_number(body["duration_minutes"], "duration_minutes", UNIT_MINUTES, MAX_DURATION_MINUTES)
        if minutes % UNIT_MINUTES:
            raise invalid("duration_minutes", f"duration_minutes must be a multiple of {UNIT_MINUTES}")
        service.duration_minutes = minutes
    if "price" in body and "price_minor" in body:
        raise invalid("price", "send price or price_minor, not both")
    if "price" in body:
        service.price_minor = money.parse_amount(body["price"], "price", allow_zero=True)
    if "price_minor" in body:
        service.price_minor = money.parse_minor(body["price_minor"], "price_minor", allow_zero=True)
    if "currency" in body:
        service.currency = money.currency(body["currency"])
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise invalid("active", "active must be true or false")
        service.active = body["active"]


def create_service(session: Session, business_id: int, body: Mapping[str, Any]) -> AppointmentService:
    """A new service from `{"name", "duration_minutes", "price" ("120.00") or "price_minor", "currency"}`."""
    service = AppointmentService(business_id=business_id, price_minor=0, currency=money.DEFAULT_CURRENCY, active=True)
    _service_fields(service, body, creating=True)
    session.add(service)
    session.flush()
    return service


def update_service(session: Session, business_id: int, service_id: Any, body: Mapping[str, Any]) -> AppointmentService:
    """Change some of a service's fields (as in `create_service`, plus `active`). Appointments already
    booked keep their times when the duration changes."""
    service = get_service(session, business_id, service_id)
    _service_fields(service, body, creating=False)
    session.flush()
    return service


def archive_service(session: Session, business_id: int, service_id: Any) -> AppointmentService:
    """Stop offering a service (its booked appointments stay)."""
    service = get_service(session, business_id, service_id)
    service.active = False
    session.flush()
    return service


# ---- opening hours -----------------------------------------------------------------------------
def weekly_hours(session: Session, business_id: int) -> dict[int, list[tuple[int, int]]]:
    """Weekday (0 = Sunday) → its open intervals in minutes after local midnight, sorted."""
    rows = session.scalars(
        sa.select(OpeningHours)
        .where(OpeningHours.business_id == business_id)
        .order_by(OpeningHours.weekday, OpeningHours.opens_minute)
    )
    week: dict[int, list[tuple[int, int]]] = {day: [] for day in range(7)}
    for row in rows:
        week[row.weekday].append((row.opens_minute, row.closes_minute))
    return week


def hours_json(week: Mapping[int, list[tuple[int, int]]]) -> list[dict[str, Any]]:
    """`weekly_hours()` as `[{"weekday", "opens", "closes"}]`, the shape `set_weekly_hours` takes."""
    return [
        {"weekday": day, "opens": time_text(opens), "closes": time_text(closes)}
        for day in range(7)
        for opens, closes in week.get(day, [])
    ]


def set_weekly_hours(session: Session, business_id: int, intervals: Any) -> dict[int, list[tuple[int, int]]]:
    """Replace the whole week with `[{"weekday": 0-6, "opens": "09:00", "closes": "17:00"}, …]`: a
    weekday may have up to four intervals that don't overlap (a split day); one not listed is closed."""
    if not isinstance(intervals, list) or len(intervals) > 7 * MAX_INTERVALS_PER_DAY:
        raise invalid("hours", f"hours must be a list of at most {7 * MAX_INTERVALS_PER_DAY} intervals")
    week: dict[int, list[tuple[int, int]]] = {day: [] for day in range(7)}
    for index, item in enumerate(intervals):
        field = f"hours[{index}]"
        if not isinstance(item, Mapping):
            raise invalid(field, f"{field} must be an object with weekday, opens and closes")
        _reject_unknown(item, ("weekday", "opens", "closes"))
        weekday = _whole_number(item.get("weekday"), f"{field}.weekday", 0, 6)
        opens = parse_time(item.get("opens"), f"{field}.opens")
        closes = parse_time(item.get("closes"), f"{field}.closes")
        week[weekday].append(_interval(opens, closes, field))
    for weekday, day in week.items():
        day.sort()
        if len(day) > MAX_INTERVALS_PER_DAY:
            raise invalid("hours", f"at most {MAX_INTERVALS_PER_DAY} intervals a day")
        for (_, first_closes), (second_opens, _) in zip(day, day[1:], strict=False):
            if second_opens < first_closes:
                raise invalid("hours", f"the intervals of weekday {weekday} overlap")
    session.execute(sa.delete(OpeningHours).where(OpeningHours.business_id == business_id))
    session.add_all(
        OpeningHours(business_id=business_id, weekday=weekday, opens_minute=opens, closes_minute=closes)
        for weekday, day in week.items()
        for opens, closes in day
    )
    session.flush()
    return week


# ---- exceptions --------------------------------------------------------------------------------
def exception_json(row: ScheduleException) -> dict[str, Any]:
    """An exception as the API shows it: `{"date", "closed", "opens", "closes", "note"}`."""
    return {
        "date": row.day,
        "closed": row.closed,
        "opens": None if row.opens_minute is None else time_text(row.opens_minute),
        "closes": None if row.closes_minute is None else time_text(row.closes_minute),
        "note": row.note,
    }


def list_exceptions(
    session: Session, business_id: int, *, start: Optional[date] = None, end: Optional[date] = None
) -> list[ScheduleException]:
    """The exceptions between local dates `start` and `end` (inclusive; either may be open), by date."""
    stmt = sa.select(ScheduleException).where(ScheduleException.business_id == business_id)
    if start is not None:
        stmt = stmt.where(ScheduleException.day >= start.isoformat())
    if end is not None:
        stmt = stmt.where(ScheduleException.day <= end.isoformat())
    return list(session.scalars(stmt.order_by(ScheduleException.day)))


def set_exception(session: Session, business_id: int, day: Any, body: Mapping[str, Any]) -> ScheduleException:
    """Make local date `day` ("YYYY-MM-DD") closed (`{"closed": true}`) or open only
    `{"closed": false, "opens": "10:00", "closes": "14:00"}`, with an optional `note`. Replaces any
    exception already on that date. Appointments already booked that day stay."""
    parsed = parse_day(day, "date")
    if not isinstance(body, Mapping):
        raise DomainError(Problem.INVALID, "invalid_body", "the body must be a JSON object")
    _reject_unknown(body, ("closed", "opens", "closes", "note"))
    closed = body.get("closed", True)
    if not isinstance(closed, bool):
        raise invalid("closed", "closed must be true or false")
    opens = closes = None
    if closed:
        if body.get("opens") is not None or body.get("closes") is not None:
            raise invalid("opens", "a closed day has no opens/closes")
    else:
        opens, closes = _interval(
            parse_time(body.get("opens"), "opens"), parse_time(body.get("closes"), "closes"), "closes"
        )
    note = "" if body.get("note") is None else clean_text(body["note"], "note", max_length=NOTE_MAX)
    row = session.scalar(
        sa.select(ScheduleException).where(
            ScheduleException.business_id == business_id, ScheduleException.day == parsed.isoformat()
        )
    )
    if row is None:
        row = ScheduleException(business_id=business_id, day=parsed.isoformat())
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # set concurrently: update that one
            row = session.scalar(
                sa.select(ScheduleException).where(
                    ScheduleException.business_id == business_id, ScheduleException.day == parsed.isoformat()
                )
            )
            assert row is not None
    row.closed, row.opens_minute, row.closes_minute, row.note = closed, opens, closes, note
    session.flush()
    return row


def delete_exception(session: Session, business_id: int, day: Any) -> None:
    """The date follows the weekly hours again; NOT_FOUND when it had no exception."""
    parsed = parse_day(day, "date")
    deleted = session.execute(
        sa.delete(ScheduleException).where(
            ScheduleException.business_id == business_id, ScheduleException.day == parsed.isoformat()
        )
    )
    if not deleted.rowcount:  # type: ignore[attr-defined]
        raise not_found("exception on that date")


# ---- open intervals ----------------------------------------------------------------------------
def open_intervals(session: Session, business_id: int, first: date, last: date) -> list[tuple[datetime, datetime]]:
    """The business's open intervals on local dates `first`…`last` (inclusive), as UTC instants,
    in order: the weekly hours, with exceptions replacing a date's hours. A local day that a DST
    change shortens or lengthens gets its true length."""
    zone = business_zone(session, business_id)
    week = weekly_hours(session, business_id)
    exceptions = {row.day: row for row in list_exceptions(session, business_id, start=first, end=last)}
    intervals: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        exception = exceptions.get(day.isoformat())
        if exception is not None:
            minutes = [] if exception.closed else [(exception.opens_minute or 0, exception.closes_minute or 0)]
        else:
            minutes = week[(day.weekday() + 1) % 7]  # Python's Monday=0 → Sunday=0
        for opens, closes in minutes:
            start, end = local_instant(day, opens, zone), local_instant(day, closes, zone)
            if end > start:
                intervals.append((start, end))
        day += timedelta(days=1)
    return intervals
