"""Free slots, booking, moving and cancelling appointments.

Double booking is impossible by construction, not by checking first: a booked appointment holds a
seat row (`appointment_seats`) for each 5-minute unit it covers, seat numbers below the book's
capacity, and the database's unique key on (business, unit, seat) refuses a second holder. A
booking reads which seats are free, inserts its rows in a savepoint, and when a concurrent booking
took one meanwhile (a unique violation) reads again: the slot is then either still free on another
seat or taken, and a taken slot is refused with alternatives. Moving does the same inside one
savepoint after giving back its own seats, so a failed move leaves the old time as it was.

`book`, `move` and `cancel` commit the session (the appointment is final before anyone is told)
and then, given the app's job queue, queue the customer's WhatsApp notice (`notices.py`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.appointments import schedule
from server.appointments.schedule import UNIT_MINUTES, invalid, not_found
from server.db.dao_crm import upsert_customer
from server.db.models import Appointment, AppointmentSeat, AppointmentService, Customer, utcnow
from server.errors import DomainError, Problem
from server.jobs import JobQueue
from server.logs import log_event
from server.phones import InvalidPhone, to_e164
from server.text import clean_text

log = logging.getLogger("agentlocator.appointments")

SOURCES = ("call", "whatsapp", "console")
STATUSES = ("booked", "cancelled")
NOTES_MAX = 2000
MAX_RANGE_DAYS = 62  # the longest span one find_slots / list call covers
MAX_DAYS_AHEAD = 2 * 366  # how far ahead an appointment may be booked
ALTERNATIVES = 5  # free starts offered when the asked-for one is taken
ALTERNATIVE_DAYS = 7  # how far ahead alternatives are looked for
_RETRIES = 5  # re-reads after losing a race for a seat before answering "taken"
_UNIT = timedelta(minutes=UNIT_MINUTES)


# ---- time helpers ------------------------------------------------------------------------------
def as_utc(value: Any, field: str = "start") -> datetime:
    """An aware datetime, or an ISO 8601 string with an offset ("2026-05-01T09:30:00+03:00", "…Z"),
    as UTC. A time without a zone is refused: it could be read in two zones."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise invalid(field, f"{field} must be an ISO 8601 date-time with an offset")
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise invalid(field, f"{field} must be an ISO 8601 date-time with an offset") from None
    if not isinstance(value, datetime):
        raise invalid(field, f"{field} must be an ISO 8601 date-time with an offset")
    if value.tzinfo is None or value.utcoffset() is None:
        raise invalid(field, f"{field} needs a time zone offset (e.g. +03:00 or Z)")
    if not schedule.FIRST_DAY <= value.date() <= schedule.LAST_DAY:
        raise invalid(field, f"{field} must be between {schedule.FIRST_DAY} and {schedule.LAST_DAY}")
    return value.astimezone(timezone.utc)


def _units(start: datetime, end: datetime) -> list[datetime]:
    units, unit = [], start
    while unit < end:
        units.append(unit)
        unit += _UNIT
    return units


def _on_grid(instant: datetime) -> bool:
    return instant.second == 0 and instant.microsecond == 0 and instant.minute % UNIT_MINUTES == 0


def _day_range(day_or_range: date | tuple[date, date]) -> tuple[date, date]:
    if isinstance(day_or_range, tuple):
        first, last = day_or_range
    else:
        first = last = day_or_range
    if not isinstance(first, date) or not isinstance(last, date) or isinstance(first, datetime):
        raise invalid("date", "give a local date, or a (first, last) pair of dates")
    if not schedule.FIRST_DAY <= first <= last <= schedule.LAST_DAY:
        if last < first:
            raise invalid("days", "the range ends before it starts")
        raise invalid("date", f"dates must be between {schedule.FIRST_DAY} and {schedule.LAST_DAY}")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise invalid("days", f"at most {MAX_RANGE_DAYS} days at once")
    return first, last


# ---- what is taken -----------------------------------------------------------------------------
def _taken_seats(session: Session, business_id: int, start: datetime, end: datetime) -> dict[datetime, set[int]]:
    rows = session.execute(
        sa.select(AppointmentSeat.unit_start, AppointmentSeat.seat).where(
            AppointmentSeat.business_id == business_id,
            AppointmentSeat.unit_start >= start,
            AppointmentSeat.unit_start < end,
        )
    )
    taken: dict[datetime, set[int]] = {}
    for unit_start, seat in rows:
        taken.setdefault(unit_start, set()).add(seat)
    return taken


def _free_seats(units: Sequence[datetime], taken: dict[datetime, set[int]], capacity: int) -> Optional[list[int]]:
    """The lowest free seat of each unit, or None when a unit is full."""
    seats = []
    for unit in units:
        busy = taken.get(unit, set())
        seat = next((s for s in range(capacity) if s not in busy), None)
        if seat is None:
            return None
        seats.append(seat)
    return seats


# ---- free slots --------------------------------------------------------------------------------
def find_slots(
    session: Session,
    business_id: int,
    service_id: int,
    day_or_range: date | tuple[date, date],
    *,
    now: Optional[datetime] = None,
    limit: Optional[int] = None,
) -> list[datetime]:
    """The free start times (aware UTC datetimes, in order) for `service_id` on a local date, or on
    the local dates `(first, last)` inclusive (at most 62 days).

    A start is offered on the book's slot grid from each opening (opening hours, or the date's
    exception), when the whole service fits before that interval closes, it is not in the past
    (`now`, default the current time), and fewer than `capacity` appointments overlap any part of
    it. Raises NOT_FOUND for a service that is not this business's or is archived.
    """
    service = schedule.get_service(session, business_id, service_id, active_only=True)
    first, last = _day_range(day_or_range)
    return _slots(session, business_id, service, first, last, now or utcnow(), limit)


def _slots(
    session: Session,
    business_id: int,
    service: AppointmentService,
    first: date,
    last: date,
    now: datetime,
    limit: Optional[int],
) -> list[datetime]:
    book = schedule.get_book(session, business_id)
    intervals = schedule.open_intervals(session, business_id, first, last)
    if not intervals:
        return []
    duration = timedelta(minutes=service.duration_minutes)
    step = timedelta(minutes=book.slot_minutes)
    taken = _taken_seats(session, business_id, intervals[0][0], intervals[-1][1])
    slots: list[datetime] = []
    for opens, closes in intervals:
        start = opens
        while start + duration <= closes:
            if start >= now and _free_seats(_units(start, start + duration), taken, book.capacity) is not None:
                slots.append(start)
                if limit is not None and len(slots) >= limit:
                    return slots
            start += step
    return slots


def alternatives(
    session: Session, business_id: int, service: AppointmentService, wanted: datetime, *, now: Optional[datetime] = None
) -> list[datetime]:
    """Up to five free starts, nearest to `wanted` first: that local day, then the next days (up to a
    week) in order."""
    zone = schedule.business_zone(session, business_id)
    day = wanted.astimezone(zone).date()
    current = now or utcnow()
    same_day = _slots(session, business_id, service, day, day, current, None)
    nearest = sorted(same_day, key=lambda slot: abs(slot - wanted))[:ALTERNATIVES]
    if len(nearest) < ALTERNATIVES:
        later = _slots(
            session,
            business_id,
            service,
            day + timedelta(days=1),
            day + timedelta(days=ALTERNATIVE_DAYS),
            current,
            ALTERNATIVES - len(nearest),
        )
        nearest += later
    return nearest


# ---- reading appointments ----------------------------------------------------------------------
@dataclass(frozen=True)
class AppointmentView:
    """An appointment with its customer and service, as the API, the diary and the tools show it."""

    appointment: Appointment
    customer: Customer
    service: AppointmentService

    def to_json(self, zone: Any = None) -> dict[str, Any]:
        a = self.appointment
        data: dict[str, Any] = {
            "id": a.id,
            "status": a.status,
            "source": a.source,
            "starts_at": a.starts_at.isoformat(),
            "ends_at": a.ends_at.isoformat(),
            "notes": a.notes,
            "customer": {"id": self.customer.id, "name": self.customer.name, "phone": self.customer.phone},
            "service": {
                "id": self.service.id,
                "name": self.service.name,
                "duration_minutes": self.service.duration_minutes,
            },
            "created_at": a.created_at.isoformat(),
            "updated_at": a.updated_at.isoformat(),
            "cancelled_at": a.cancelled_at.isoformat() if a.cancelled_at else None,
        }
        if zone is not None:
            data["local_start"] = a.starts_at.astimezone(zone).isoformat()
            data["local_end"] = a.ends_at.astimezone(zone).isoformat()
        return data


def _view(session: Session, appointment: Appointment) -> AppointmentView:
    customer = session.get(Customer, appointment.customer_id)
    service = session.get(AppointmentService, appointment.service_id)
    assert customer is not None and service is not None
    return AppointmentView(appointment, customer, service)


def get_appointment(
    session: Session, business_id: int, appointment_id: Any, *, for_update: bool = False
) -> Appointment:
    """The business's appointment, or NOT_FOUND (also for another business's)."""
    if isinstance(appointment_id, bool) or not isinstance(appointment_id, int) or not 1 <= appointment_id <= 2**31 - 1:
        raise not_found("appointment")
    stmt = sa.select(Appointment).where(Appointment.business_id == business_id, Appointment.id == appointment_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    appointment = session.scalar(stmt)
    if appointment is None:
        raise not_found("appointment")
    return appointment


def appointment_view(session: Session, business_id: int, appointment_id: Any) -> AppointmentView:
    """The business's appointment with its customer and service, or NOT_FOUND."""
    return _view(session, get_appointment(session, business_id, appointment_id))


def list_appointments(
    session: Session,
    business_id: int,
    day_or_range: date | tuple[date, date],
    *,
    include_cancelled: bool = False,
    customer_id: Optional[int] = None,
) -> list[AppointmentView]:
    """Appointments starting on a local date or `(first, last)` dates (inclusive), by start time."""
    first, last = _day_range(day_or_range)
    zone = schedule.business_zone(session, business_id)
    start, end = schedule.local_midnight(first, zone), schedule.local_midnight(last + timedelta(days=1), zone)
    stmt = (
        sa.select(Appointment, Customer, AppointmentService)
        .join(Customer, Appointment.customer_id == Customer.id)
        .join(AppointmentService, Appointment.service_id == AppointmentService.id)
        .where(Appointment.business_id == business_id, Appointment.starts_at >= start, Appointment.starts_at < end)
        .order_by(Appointment.starts_at, Appointment.id)
    )
    if not include_cancelled:
        stmt = stmt.where(Appointment.status == "booked")
    if customer_id is not None:
        stmt = stmt.where(Appointment.customer_id == customer_id)
    return [AppointmentView(a, c, s) for a, c, s in session.execute(stmt)]


def upcoming_for_customer(
    session: Session, business_id: int, customer_id: int, *, now: Optional[datetime] = None
) -> list[AppointmentView]:
    """A customer's booked appointments that have not started yet, soonest first (for "cancel my appointment")."""
    stmt = (
        sa.select(Appointment, Customer, AppointmentService)
        .join(Customer, Appointment.customer_id == Customer.id)
        .join(AppointmentService, Appointment.service_id == AppointmentService.id)
        .where(
            Appointment.business_id == business_id,
            Appointment.customer_id == customer_id,
            Appointment.status == "booked",
            Appointment.starts_at >= (now or utcnow()),
        )
        .order_by(Appointment.starts_at)
    )
    return [AppointmentView(a, c, s) for a, c, s in session.execute(stmt)]


# ---- seats -------------------------------------------------------------------------------------
def _slot_taken(session: Session, business_id: int, service: AppointmentService, start: datetime) -> DomainError:
    options = alternatives(session, business_id, service, start)
    return DomainError(
        Problem.CONFLICT,
        "slot_taken",
        "that time is no longer free",
        field="start",
        alternatives=[slot.isoformat() for slot in options],
    )


def _take_seats(
    session: Session, business_id: int, appointment: Appointment, capacity: int, *, give_back_first: bool = False
) -> bool:
    """Hold a seat for every unit of `appointment` (flushed, in a savepoint); False when a unit is full.

    With `give_back_first` the appointment's current seats are released inside the same savepoint,
    so if the new ones can't be had, the old ones are kept (an atomic move)."""
    units = _units(appointment.starts_at, appointment.ends_at)
    for _ in range(_RETRIES):
        savepoint = session.begin_nested()
        try:
            if give_back_first:
                session.execute(sa.delete(AppointmentSeat).where(AppointmentSeat.appointment_id == appointment.id))
            seats = _free_seats(units, _taken_seats(session, business_id, units[0], units[-1] + _UNIT), capacity)
            if seats is None:
                savepoint.rollback()
                return False
            session.add_all(
                AppointmentSeat(business_id=business_id, appointment_id=appointment.id, seat=seat, unit_start=unit)
                for unit, seat in zip(units, seats, strict=True)
            )
            session.flush()
            savepoint.commit()
            return True
        except IntegrityError:
            # A concurrent booking took one of these seats between our read and our insert: read again.
            savepoint.rollback()
    return False


def _check_start(
    session: Session, business_id: int, service: AppointmentService, start: datetime, *, now: Optional[datetime]
) -> datetime:
    current = now or utcnow()
    if start < current:
        raise DomainError(Problem.UNPROCESSABLE, "in_the_past", "that time has already passed", field="start")
    if start > current + timedelta(days=MAX_DAYS_AHEAD):
        raise DomainError(
            Problem.UNPROCESSABLE,
            "too_far_ahead",
            f"appointments are booked up to {MAX_DAYS_AHEAD} days ahead",
            field="start",
        )
    if not _on_grid(start):
        raise invalid("start", f"start must be on a {UNIT_MINUTES}-minute boundary")
    end = start + timedelta(minutes=service.duration_minutes)
    zone = schedule.business_zone(session, business_id)
    local_day = start.astimezone(zone).date()
    for opens, closes in schedule.open_intervals(session, business_id, local_day, local_day):
        if opens <= start and end <= closes:
            return end
    raise DomainError(
        Problem.UNPROCESSABLE,
        "outside_opening_hours",
        "the business is not open for the whole of that time",
        field="start",
        alternatives=[slot.isoformat() for slot in alternatives(session, business_id, service, start, now=now)],
    )


def _customer(
    session: Session, business_id: int, customer_id: Optional[int], phone: Optional[str], name: Optional[str]
) -> Customer:
    if customer_id is not None:
        if isinstance(customer_id, bool) or not isinstance(customer_id, int) or not 1 <= customer_id <= 2**31 - 1:
            raise not_found("customer")
        customer = session.scalar(
            sa.select(Customer).where(Customer.business_id == business_id, Customer.id == customer_id)
        )
        if customer is None:
            raise not_found("customer")
        return customer
    if not isinstance(phone, str) or not phone.strip():
        raise invalid("phone", "give customer_id or the customer's phone")
    try:
        e164 = to_e164(clean_text(phone, "phone", max_length=40))
    except InvalidPhone:
        raise invalid("phone", "phone is not a phone number") from None
    clean_name = None if name is None else clean_text(name, "name", max_length=200).strip() or None
    return upsert_customer(session, business_id, phone=e164, name=clean_name)


# ---- booking, moving, cancelling ---------------------------------------------------------------
def book(
    session: Session,
    business_id: int,
    *,
    service_id: int,
    start: datetime | str,
    source: str,
    customer_id: Optional[int] = None,
    phone: Optional[str] = None,
    name: Optional[str] = None,
    notes: str = "",
    jobs: Optional[JobQueue] = None,
    now: Optional[datetime] = None,
) -> AppointmentView:
    """Book `service_id` at `start` (aware datetime or ISO string with offset) for a customer, and
    commit. The customer is `customer_id` (this business's) or found/created by `phone` (+ `name`).
    `source` is "call", "whatsapp" or "console". With `jobs`, the customer gets a WhatsApp notice.

    Raises DomainError: NOT_FOUND (service or customer not this business's), INVALID (malformed
    input, a start off the 5-minute grid), UNPROCESSABLE `in_the_past` / `outside_opening_hours`,
    CONFLICT `slot_taken` (with `alternatives`: up to five free ISO starts nearby).
    """
    if source not in SOURCES:
        raise invalid("source", f"source must be one of: {', '.join(SOURCES)}")
    notes = "" if notes is None else clean_text(notes, "notes", max_length=NOTES_MAX)
    service = schedule.get_service(session, business_id, service_id, active_only=True)
    start_utc = as_utc(start)
    end = _check_start(session, business_id, service, start_utc, now=now)
    customer = _customer(session, business_id, customer_id, phone, name)
    book_row = schedule.get_book(session, business_id)
    appointment = Appointment(
        business_id=business_id,
        customer_id=customer.id,
        service_id=service.id,
        starts_at=start_utc,
        ends_at=end,
        status="booked",
        source=source,
        notes=notes,
        revision=0,
    )
    session.add(appointment)
    session.flush()
    if not _take_seats(session, business_id, appointment, book_row.capacity):
        error = _slot_taken(session, business_id, service, start_utc)
        session.rollback()
        raise error
    session.commit()
    log_event(log, "appointment_booked", business_id=business_id, appointment_id=appointment.id, source=source)
    _notify(jobs, appointment, "booked")
    return AppointmentView(appointment, customer, service)


def move(
    session: Session,
    business_id: int,
    appointment_id: int,
    *,
    start: datetime | str,
    jobs: Optional[JobQueue] = None,
    now: Optional[datetime] = None,
) -> AppointmentView:
    """Move a booked appointment to `start` (same service and length) and commit. Atomic: when the
    new time is taken, the appointment keeps its old time and seats, and CONFLICT `slot_taken`
    (with `alternatives`) is raised. NOT_FOUND for another business's appointment, CONFLICT
    `not_booked` for a cancelled one, and the checks of `book` for the new time."""
    appointment = get_appointment(session, business_id, appointment_id, for_update=True)
    if appointment.status != "booked":
        raise DomainError(Problem.CONFLICT, "not_booked", "the appointment is cancelled")
    service = session.get(AppointmentService, appointment.service_id)
    assert service is not None
    start_utc = as_utc(start)
    end = _check_start(session, business_id, service, start_utc, now=now)
    old_start, old_end = appointment.starts_at, appointment.ends_at
    appointment.starts_at, appointment.ends_at = start_utc, end
    capacity = schedule.get_book(session, business_id).capacity
    if not _take_seats(session, business_id, appointment, capacity, give_back_first=True):
        appointment.starts_at, appointment.ends_at = old_start, old_end
        error = _slot_taken(session, business_id, service, start_utc)
        session.rollback()
        raise error
    appointment.revision += 1
    session.commit()
    log_event(log, "appointment_moved", business_id=business_id, appointment_id=appointment.id)
    _notify(jobs, appointment, "moved")
    return _view(session, appointment)


def cancel(
    session: Session, business_id: int, appointment_id: int, *, jobs: Optional[JobQueue] = None
) -> AppointmentView:
    """Cancel a booked appointment, free its time at once, and commit. Cancelling one already
    cancelled changes nothing (and sends nothing). NOT_FOUND for another business's appointment."""
    appointment = get_appointment(session, business_id, appointment_id, for_update=True)
    if appointment.status == "cancelled":
        return _view(session, appointment)
    session.execute(sa.delete(AppointmentSeat).where(AppointmentSeat.appointment_id == appointment.id))
    appointment.status = "cancelled"
    appointment.cancelled_at = utcnow()
    appointment.revision += 1
    session.commit()
    log_event(log, "appointment_cancelled", business_id=business_id, appointment_id=appointment.id)
    _notify(jobs, appointment, "cancelled")
    return _view(session, appointment)


def _notify(jobs: Optional[JobQueue], appointment: Appointment, kind: str) -> None:
    """Queue the customer's notice. The appointment is committed already: a queue that can't be
    reached costs the notice (logged), never the booking."""
    if jobs is None:
        return
    key = f"appointment_notice:{appointment.id}:{kind}:{uuid.uuid4().hex[:12]}"
    try:
        jobs.enqueue("appointment_notice", key, appointment.id, kind, appointment.starts_at.isoformat())
    except DomainError:
        log_event(log, "appointment_notice_not_queued", logging.WARNING, appointment_id=appointment.id, kind=kind)
