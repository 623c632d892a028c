"""The customer's WhatsApp notice after a booking, a move or a cancellation: a durable background
job (`appointment_notice`), so a slow or down WhatsApp provider never slows the booking, and a
restart doesn't lose the notice.

The text is Hebrew, with the date and time in the business's zone. It goes through the one send
service (`send_whatsapp`, provider "auto"), which keeps WhatsApp's 24-hour rule: free-form text
leaves through Twilio only within 24 hours of the customer's last message, through the Baileys
bridge at any time. When no provider may send it now (`template_required`), or the customer has no
phone number, the notice is skipped and logged; a provider failure is retried by the job queue,
except when the message may have gone out (`outcome_unknown`): a retry could send it twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from server.db.models import Appointment, AppointmentService, Business, Customer
from server.errors import DomainError, Problem
from server.jobs import JobContext, job
from server.logs import log_event
from server.whatsapp.send import send_whatsapp

log = logging.getLogger("agentlocator.appointments")

HEBREW_DAYS = ("שני", "שלישי", "רביעי", "חמישי", "שישי", "שבת", "ראשון")  # Python's weekday(): Monday = 0
_SKIP = (Problem.UNPROCESSABLE, Problem.INVALID, Problem.NOT_CONFIGURED)


def when_text(instant: datetime, zone: ZoneInfo) -> str:
    """ "יום שלישי 05.05.2026 בשעה 09:30" in the business's zone."""
    local = instant.astimezone(zone)
    return f"יום {HEBREW_DAYS[local.weekday()]} {local:%d.%m.%Y} בשעה {local:%H:%M}"


def notice_text(
    kind: str, business: Business, service: AppointmentService, customer: Customer, starts_at: datetime
) -> str:
    """The notice for `kind` "booked", "moved" or "cancelled"."""
    zone = ZoneInfo(business.timezone or "Asia/Jerusalem")
    greeting = f"שלום {customer.name}," if customer.name else "שלום,"
    when = when_text(starts_at, zone)
    if kind == "booked":
        body = f"התור שלך ל{service.name} נקבע ל{when}."
    elif kind == "moved":
        body = f"התור שלך ל{service.name} הועבר ל{when}."
    else:
        body = f"התור שלך ל{service.name} ב{when} בוטל."
    return f"{greeting}\n{body}\n{business.name}"


@job("appointment_notice")
def _appointment_notice(ctx: JobContext, appointment_id: int, kind: str, starts_at_iso: str) -> None:
    """Send the notice for the appointment as it was when `kind` happened (`starts_at_iso`: a
    cancellation names the time that was cancelled, a move the time it moved to)."""
    with ctx.database.scope() as session:
        appointment = session.get(Appointment, appointment_id)
        if appointment is None:
            return
        business = session.get(Business, appointment.business_id)
        customer = session.get(Customer, appointment.customer_id)
        service = session.get(AppointmentService, appointment.service_id)
        assert business is not None and customer is not None and service is not None
        if not customer.phone:
            log_event(log, "appointment_notice_skipped", appointment_id=appointment_id, reason="no_phone")
            return
        text = notice_text(kind, business, service, customer, datetime.fromisoformat(starts_at_iso))
        try:
            send_whatsapp(session, ctx.settings, business.id, to=customer.phone, text=text)
        except DomainError as exc:
            if exc.problem in _SKIP or exc.code == "outcome_unknown":
                log_event(
                    log,
                    "appointment_notice_skipped",
                    logging.WARNING,
                    appointment_id=appointment_id,
                    kind=kind,
                    reason=exc.code,
                )
                return
            raise
    log_event(log, "appointment_notice_sent", appointment_id=appointment_id, kind=kind)
