"""Request bodies and query strings of `/api/appointments/*` → calls of the service, so the routes
stay a line each. Unknown fields are refused; every mistake is a 400 naming the field."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Mapping, Optional

from sqlalchemy.orm import Session

from server.appointments import booking, schedule
from server.appointments.schedule import invalid
from server.db.models import utcnow
from server.jobs import JobQueue

MAX_LIST_DAYS = 31
MAX_SLOT_DAYS = 14
MAX_ID = 2**31 - 1


def _reject_unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _notify(body: Mapping[str, Any], jobs: JobQueue) -> Optional[JobQueue]:
    notify = body.get("notify", True)
    if not isinstance(notify, bool):
        raise invalid("notify", "notify must be true or false")
    return jobs if notify else None


def _query_days(args: Mapping[str, str], default_max: int) -> int:
    raw = args.get("days")
    if raw is None:
        return 1
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3 or not 1 <= int(raw) <= default_max:
        raise invalid("days", f"days must be a whole number from 1 to {default_max}")
    return int(raw)


def query_range(session: Session, business_id: int, args: Mapping[str, str], max_days: int) -> tuple[date, date]:
    """`from` (a local date, default today in the business's zone) and `days` (default 1)."""
    raw = args.get("from")
    if raw is None:
        first = utcnow().astimezone(schedule.business_zone(session, business_id)).date()
    else:
        first = schedule.parse_day(raw, "from")
    return first, first + timedelta(days=_query_days(args, max_days) - 1)


def query_flag(args: Mapping[str, str], name: str) -> bool:
    raw = args.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise invalid(name, f"{name} must be true or false")
    return raw == "true"


def query_service_id(args: Mapping[str, str]) -> int:
    raw = args.get("service_id")
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not 1 <= int(raw) <= MAX_ID:
        raise invalid("service_id", "service_id must be a positive integer id")
    return int(raw)


def _optional_id(body: Mapping[str, Any], field: str) -> Optional[int]:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise invalid(field, f"{field} must be a positive integer id")
    return value


def _optional_text(body: Mapping[str, Any], field: str) -> Optional[str]:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(field, f"{field} must be a string")
    return value


def create(session: Session, business_id: int, body: Mapping[str, Any], jobs: JobQueue) -> booking.AppointmentView:
    """`{"service_id", "start", "customer_id" | "phone" (+ "name"), "notes", "source", "notify"}`."""
    _reject_unknown(body, ("service_id", "start", "customer_id", "phone", "name", "notes", "source", "notify"))
    service_id = _optional_id(body, "service_id")
    if service_id is None:
        raise invalid("service_id", "service_id is required")
    if body.get("start") is None:
        raise invalid("start", "start is required")
    if not isinstance(body["start"], str):
        raise invalid("start", "start must be an ISO 8601 date-time with an offset")
    source = body.get("source", "console")
    if not isinstance(source, str) or source not in booking.SOURCES:
        raise invalid("source", f"source must be one of: {', '.join(booking.SOURCES)}")
    customer_id = _optional_id(body, "customer_id")
    phone, name, notes = _optional_text(body, "phone"), _optional_text(body, "name"), _optional_text(body, "notes")
    if customer_id is not None and phone is not None:
        raise invalid("phone", "give customer_id or phone, not both")
    notify = _notify(body, jobs)
    return booking.book(
        session,
        business_id,
        service_id=service_id,
        start=body["start"],
        source=source,
        customer_id=customer_id,
        phone=phone,
        name=name,
        notes=notes or "",
        jobs=notify,
    )


def move(
    session: Session, business_id: int, appointment_id: int, body: Mapping[str, Any], jobs: JobQueue
) -> booking.AppointmentView:
    """`{"start", "notify"}`."""
    _reject_unknown(body, ("start", "notify"))
    if not isinstance(body.get("start"), str):
        raise invalid("start", "start is required: an ISO 8601 date-time with an offset")
    notify = _notify(body, jobs)
    return booking.move(session, business_id, appointment_id, start=body["start"], jobs=notify)


def cancel(
    session: Session, business_id: int, appointment_id: int, body: Mapping[str, Any], jobs: JobQueue
) -> booking.AppointmentView:
    """`{"notify"}` (or no body)."""
    _reject_unknown(body, ("notify",))
    notify = _notify(body, jobs)
    return booking.cancel(session, business_id, appointment_id, jobs=notify)


def set_hours(session: Session, business_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """`{"hours": [{"weekday", "opens", "closes"}, …]}`."""
    _reject_unknown(body, ("hours",))
    if "hours" not in body:
        raise invalid("hours", "hours is required")
    return {"hours": schedule.hours_json(schedule.set_weekly_hours(session, business_id, body["hours"]))}


def settings_json(session: Session, business_id: int) -> dict[str, Any]:
    return {
        **schedule.book_settings(session, business_id).to_json(),
        "hours": schedule.hours_json(schedule.weekly_hours(session, business_id)),
    }
