"""The business's appointments as an iCalendar feed (RFC 5545) behind a secret URL,
`/calendar/<secret>.ics`, that Google Calendar, Outlook or Apple Calendar subscribe to.

Only the secret's SHA-256 is stored (`appointment_books.feed_token_hash`): a leaked table opens no
feed, and the owner sees the link once, when rotating it; rotating cancels the old link at once.
The document is written with the `icalendar` library (a maintained RFC 5545 implementation, which
also writes the VTIMEZONE of the business's zone from zoneinfo): each event has a stable UID, a
DTSTAMP, a SEQUENCE that grows with each move, and DTSTART/DTEND in the business's zone.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Optional
from zoneinfo import ZoneInfo

import icalendar
import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.appointments import schedule
from server.db.models import Appointment, AppointmentBook, AppointmentService, Business, Customer, utcnow

FEED_PAST_DAYS = 60  # how far back the feed reaches
FEED_MAX_EVENTS = 5000
_TOKEN_BYTES = 32


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def rotate_feed_token(session: Session, business_id: int) -> str:
    """A new feed secret for the business (the old link stops working); only its hash is kept, so
    the caller shows the returned secret to the owner now or never."""
    book = schedule.get_book(session, business_id, for_update=True)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    book.feed_token_hash = _digest(token)
    book.feed_rotated_at = utcnow()
    session.flush()
    return token


def business_for_token(session: Session, token: str) -> Optional[int]:
    """The business whose feed secret `token` is, or None."""
    if not token or len(token) > 128:
        return None
    return session.scalar(
        sa.select(AppointmentBook.business_id).where(AppointmentBook.feed_token_hash == _digest(token))
    )


def calendar_ics(session: Session, business_id: int, host: str) -> bytes:
    """The feed: booked appointments from 60 days ago on, as VEVENTs in the business's zone."""
    business = session.get(Business, business_id)
    assert business is not None
    zone = ZoneInfo(business.timezone or "Asia/Jerusalem")
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//AgentLocator//Appointments//HE")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", f"תורים – {business.name}")
    calendar.add("x-wr-timezone", zone.key)
    calendar.add("refresh-interval", timedelta(minutes=15), parameters={"VALUE": "DURATION"})
    rows = session.execute(
        sa.select(Appointment, Customer, AppointmentService)
        .join(Customer, Appointment.customer_id == Customer.id)
        .join(AppointmentService, Appointment.service_id == AppointmentService.id)
        .where(
            Appointment.business_id == business_id,
            Appointment.status == "booked",
            Appointment.starts_at >= utcnow() - timedelta(days=FEED_PAST_DAYS),
        )
        .order_by(Appointment.starts_at)
        .limit(FEED_MAX_EVENTS)
    )
    for appointment, customer, service in rows:
        event = icalendar.Event()
        event.add("uid", f"appointment-{appointment.id}@{host}")
        event.add("dtstamp", appointment.updated_at)
        event.add("created", appointment.created_at)
        event.add("last-modified", appointment.updated_at)
        event.add("sequence", appointment.revision)
        event.add("dtstart", appointment.starts_at.astimezone(zone))
        event.add("dtend", appointment.ends_at.astimezone(zone))
        who = customer.name or customer.phone or ""
        event.add("summary", f"{service.name} – {who}" if who else service.name)
        details = [f"טלפון: {customer.phone}" if customer.phone else "", appointment.notes]
        description = "\n".join(part for part in details if part)
        if description:
            event.add("description", description)
        event.add("status", "CONFIRMED")
        event.add("transp", "OPAQUE")
        calendar.add_component(event)
    calendar.add_missing_timezones()
    return calendar.to_ical()
