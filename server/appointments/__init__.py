"""The appointment book: services, opening hours and exceptions, free slots, booking, moving and
cancelling (double booking impossible by a database constraint), the customer's WhatsApp notice,
and the iCalendar feed. Every function takes a SQLAlchemy session and the business id first and
raises `server.errors.DomainError` on failure. See docs/appointments.md."""

from server.appointments.booking import (
    AppointmentView,
    alternatives,
    appointment_view,
    as_utc,
    book,
    cancel,
    find_slots,
    get_appointment,
    list_appointments,
    move,
    upcoming_for_customer,
)
from server.appointments.schedule import (
    archive_service,
    book_settings,
    create_service,
    delete_exception,
    get_service,
    list_exceptions,
    list_services,
    set_exception,
    set_weekly_hours,
    update_book,
    update_service,
    weekly_hours,
)

__all__ = [
    "AppointmentView",
    "alternatives",
    "appointment_view",
    "archive_service",
    "as_utc",
    "book",
    "book_settings",
    "cancel",
    "create_service",
    "delete_exception",
    "find_slots",
    "get_appointment",
    "get_service",
    "list_appointments",
    "list_exceptions",
    "list_services",
    "move",
    "set_exception",
    "set_weekly_hours",
    "update_book",
    "update_service",
    "upcoming_for_customer",
    "weekly_hours",
]
