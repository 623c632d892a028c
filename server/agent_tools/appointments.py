"""`find_slots`, `book_appointment`, `cancel_appointment`: thin wrappers over the appointment book
(`server.appointments`), which makes double booking impossible and sends the customer's WhatsApp
notice (a durable job: the tool hands it the job queue). The model speaks in the business's local
time; the book works in UTC: results carry both."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from server import appointments
from server.agent.tools import Tool, ToolContext, register
from server.appointments.schedule import business_zone
from server.db.models import Customer
from server.errors import DomainError

MAX_SLOTS = 8  # a caller can't take in more; the model asks for another day instead
MAX_RANGE_DAYS = 14
HEBREW_WEEKDAYS = ("שני", "שלישי", "רביעי", "חמישי", "שישי", "שבת", "ראשון")
SOURCES = {"call": "call", "whatsapp": "whatsapp"}


def _local(instant: datetime, zone: ZoneInfo) -> dict[str, str]:
    local = instant.astimezone(zone)
    return {
        "start": instant.isoformat(),
        "local": local.strftime("%Y-%m-%d %H:%M"),
        "weekday": f"יום {HEBREW_WEEKDAYS[local.weekday()]}",
    }


def _services(session: Session, business_id: int) -> list[dict[str, Any]]:
    return [
        {"service_id": s.id, "name": s.name, "duration_minutes": s.duration_minutes, "price_minor": s.price_minor}
        for s in appointments.list_services(session, business_id)
    ]


def _refusal(exc: DomainError, zone: ZoneInfo) -> dict[str, Any]:
    """A refusal of the book as the model reads it: why, and free times nearby when there are any."""
    result: dict[str, Any] = {"error": exc.message, "code": exc.code}
    options: Iterable[str] = exc.details.get("alternatives") or []
    if options:
        result["alternatives"] = [_local(datetime.fromisoformat(o), zone) for o in options]
        result["next"] = "Offer the customer these times instead."
    return result


def find_slots(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        zone = business_zone(session, context.business_id)
        if "service_id" not in args:
            return {
                "services": _services(session, context.business_id),
                "next": "Ask which service the customer wants, then call find_slots again with its service_id.",
            }
        try:
            first = date.fromisoformat(args["date"])
            last = date.fromisoformat(args["to_date"]) if args.get("to_date") else first
        except ValueError:
            return {"error": "date and to_date must be real dates, YYYY-MM-DD"}
        if last < first or last - first > timedelta(days=MAX_RANGE_DAYS):
            return {"error": f"to_date must be on or after date, at most {MAX_RANGE_DAYS} days later"}
        try:
            slots = appointments.find_slots(
                session, context.business_id, args["service_id"], (first, last), limit=MAX_SLOTS
            )
        except DomainError as exc:
            if exc.code == "not_found":
                return {"error": "no such service", "services": _services(session, context.business_id)}
            raise
        if not slots:
            return {"slots": [], "next": "Nothing is free then: offer to look at another day."}
        return {"slots": [_local(slot, zone) for slot in slots]}

    return context.run(read)


def book_appointment(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    if context.customer_id is None and not context.phone:
        return {"error": "the customer's phone number is unknown: take a message instead"}

    def write(session: Session) -> dict[str, Any]:
        zone = business_zone(session, context.business_id)
        try:
            start = datetime.fromisoformat(args["start"])
        except ValueError:
            return {"error": "start must be a real local time, YYYY-MM-DDTHH:MM"}
        if start.tzinfo is None:  # the model gave the local wall-clock time, as the customer said it
            start = start.replace(tzinfo=zone)
        if context.customer_id is not None and args.get("name"):
            customer = session.get(Customer, context.customer_id)
            if customer is not None and customer.business_id == context.business_id and not customer.name:
                customer.name = args["name"].strip()[:200]  # the caller told us who they are
        try:
            view = appointments.book(
                session,
                context.business_id,
                service_id=args["service_id"],
                start=start,
                source=SOURCES[context.channel],
                customer_id=context.customer_id,
                phone=None if context.customer_id else context.phone,
                name=args.get("name") or None,
                notes=args.get("notes", ""),
                jobs=context.jobs,
            )
        except DomainError as exc:
            return _refusal(exc, zone)
        appointment = view.appointment
        return {
            "booked": True,
            "appointment_id": appointment.id,
            "service": view.service.name,
            **_local(appointment.starts_at, zone),
            "next": "Confirm the day and time to the customer; a WhatsApp confirmation is on its way.",
        }

    return context.run(write)


def cancel_appointment(context: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    if context.customer_id is None:
        return {"error": "this customer has no appointments"}

    def write(session: Session) -> dict[str, Any]:
        zone = business_zone(session, context.business_id)
        upcoming = appointments.upcoming_for_customer(session, context.business_id, context.customer_id or 0)
        listed = [
            {"appointment_id": v.appointment.id, "service": v.service.name, **_local(v.appointment.starts_at, zone)}
            for v in upcoming
        ]
        wanted = args.get("appointment_id")
        if wanted is None:
            if len(upcoming) != 1:
                return {
                    "error": "say which appointment to cancel"
                    if upcoming
                    else "the customer has no upcoming appointment",
                    "appointments": listed,
                }
            wanted = upcoming[0].appointment.id
        if wanted not in {v.appointment.id for v in upcoming}:
            # Only this customer's own upcoming appointments: a caller can't cancel someone else's.
            return {"error": "no upcoming appointment of this customer has that id", "appointments": listed}
        view = appointments.cancel(session, context.business_id, wanted, jobs=context.jobs)
        return {
            "cancelled": True,
            "appointment_id": view.appointment.id,
            "service": view.service.name,
            **_local(view.appointment.starts_at, zone),
        }

    return context.run(write)


_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "a local date, YYYY-MM-DD"}

register(
    Tool(
        name="find_slots",
        label="חיפוש תורים פנויים",
        description=(
            "Find free appointment times for a service on a day (or from date to to_date). Without "
            "service_id it lists the business's services. Times are the business's local time; offer "
            "the customer two or three of them, said in Hebrew words on a call."
        ),
        parameters={
            "type": "object",
            "properties": {
                "service_id": {"type": "integer", "minimum": 1},
                "date": _DATE,
                "to_date": _DATE,
            },
            "required": ["date"],
            "additionalProperties": False,
        },
        handler=find_slots,
    )
)
register(
    Tool(
        name="book_appointment",
        label="קביעת תור",
        description=(
            "Book an appointment for this customer once they chose a service and a free time. start is "
            "the local time YYYY-MM-DDTHH:MM (from find_slots). If the time was taken meanwhile the "
            "result lists alternatives to offer."
        ),
        parameters={
            "type": "object",
            "properties": {
                "service_id": {"type": "integer", "minimum": 1},
                "start": {
                    "type": "string",
                    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2}|Z)?$",
                },
                "name": {"type": "string", "maxLength": 200, "description": "the customer's name"},
                "notes": {"type": "string", "maxLength": 500},
            },
            "required": ["service_id", "start"],
            "additionalProperties": False,
        },
        handler=book_appointment,
    )
)
register(
    Tool(
        name="cancel_appointment",
        label="ביטול תור",
        description=(
            "Cancel one of this customer's upcoming appointments. Without appointment_id it cancels "
            "their only upcoming one, or lists them so you can ask which. Confirm with the customer "
            "before cancelling."
        ),
        parameters={
            "type": "object",
            "properties": {"appointment_id": {"type": "integer", "minimum": 1}},
            "additionalProperties": False,
        },
        handler=cancel_appointment,
    )
)
