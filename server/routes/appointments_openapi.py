"""OpenAPI path items and schemas of `/api/appointments/*` (`server/routes/appointments_api.py`).
Request schemas are closed and no looser than the handlers, so what the document calls invalid is
refused."""

from __future__ import annotations

from typing import Any

from server import money
from server.appointments import api_bodies, booking, schedule
from server.openapi import error_responses, json_response, obj, operation, path_param, query_param, ref

TAG = ["Appointments"]
STR = {"type": "string"}
STR_N = {"type": ["string", "null"]}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
DT = {"type": "string", "format": "date-time"}
ID = {"type": "integer", "minimum": 1, "maximum": api_bodies.MAX_ID}
DAY = {"type": "string", "pattern": schedule.DAY_PATTERN, "description": "a local date YYYY-MM-DD"}
TIME = {"type": "string", "pattern": schedule.TIME_PATTERN, "description": "local time HH:MM"}
START = {
    "type": "string",
    "maxLength": 40,
    "description": "ISO 8601 date-time with an offset, e.g. 2026-05-03T10:00:00+03:00, on a 5-minute boundary",
}


def _days(maximum: int) -> dict[str, Any]:
    return query_param(
        "days", {"type": "integer", "minimum": 1, "maximum": maximum}, "how many days from `from` (default 1)"
    )


FROM = query_param("from", DAY, "the first local date (default: today in the business's zone)")
FLAG = {"type": "string", "enum": ["true", "false"]}
APPOINTMENT_ID = path_param("appointment_id", ID)
SERVICE_ID = path_param("service_id", ID)
DAY_PARAM = path_param("day", DAY)

_APPOINTMENT = obj(
    {
        "id": INT,
        "status": {"enum": list(booking.STATUSES)},
        "source": {"enum": list(booking.SOURCES)},
        "starts_at": DT,
        "ends_at": DT,
        "local_start": {**DT, "description": "starts_at in the business's zone"},
        "local_end": DT,
        "notes": STR,
        "customer": obj({"id": INT, "name": STR, "phone": STR_N}, ["id", "name", "phone"]),
        "service": obj({"id": INT, "name": STR, "duration_minutes": INT}, ["id", "name", "duration_minutes"]),
        "created_at": DT,
        "updated_at": DT,
        "cancelled_at": {**STR_N, "format": "date-time"},
    },
    ["id", "status", "source", "starts_at", "ends_at", "notes", "customer", "service"],
)
_SERVICE = obj(
    {
        "id": INT,
        "name": STR,
        "duration_minutes": INT,
        "price_minor": INT,
        "price": STR,
        "currency": {"enum": list(money.CURRENCIES)},
        "active": BOOL,
    },
    ["id", "name", "duration_minutes", "price_minor", "price", "currency", "active"],
)
_HOURS_ITEM = obj(
    {
        "weekday": {"type": "integer", "minimum": 0, "maximum": 6, "description": "0 = Sunday … 6 = Saturday"},
        "opens": TIME,
        "closes": TIME,
    },
    ["weekday", "opens", "closes"],
    closed=True,
)
_EXCEPTION = obj(
    {"date": STR, "closed": BOOL, "opens": STR_N, "closes": STR_N, "note": STR},
    ["date", "closed", "opens", "closes", "note"],
)
_SETTINGS = obj(
    {
        "capacity": INT,
        "slot_minutes": INT,
        "timezone": STR,
        "feed_active": BOOL,
        "feed_rotated_at": {**STR_N, "format": "date-time"},
        "hours": {"type": "array", "items": ref("OpeningHours")},
    },
    ["capacity", "slot_minutes", "timezone", "feed_active", "hours"],
)
_TAKEN = {
    "409": json_response(
        ref("Error"), "slot_taken (with `alternatives`: free ISO starts nearby) or not_booked (cancelled)"
    ),
    "422": json_response(
        ref("Error"), "in_the_past, too_far_ahead (over two years) or outside_opening_hours (with `alternatives`)"
    ),
}
NOTIFY = {**BOOL, "description": "send the customer a WhatsApp notice (default true)"}

_SERVICE_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": schedule.NAME_MAX},
    "duration_minutes": {
        "type": "integer",
        "minimum": schedule.UNIT_MINUTES,
        "maximum": schedule.MAX_DURATION_MINUTES,
        "multipleOf": schedule.UNIT_MINUTES,
    },
    "price": {"type": "string", "pattern": money.DECIMAL_PATTERN, "maxLength": 20},
    "price_minor": {"type": "integer", "minimum": 0, "maximum": money.MAX_AMOUNT_MINOR},
    "currency": {"enum": list(money.CURRENCIES)},
    "active": BOOL,
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Appointment": _APPOINTMENT,
    "AppointmentService": _SERVICE,
    "OpeningHours": _HOURS_ITEM,
    "ScheduleException": _EXCEPTION,
    "AppointmentSettings": _SETTINGS,
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/appointments": {
        "get": operation(
            "Appointments starting on local dates `from` … `from + days - 1`",
            tags=TAG,
            parameters=[FROM, _days(api_bodies.MAX_LIST_DAYS), query_param("include_cancelled", FLAG)],
            responses={
                "200": json_response(
                    obj(
                        {
                            "timezone": STR,
                            "from": STR,
                            "to": STR,
                            "items": {"type": "array", "items": ref("Appointment")},
                        },
                        ["timezone", "from", "to", "items"],
                    )
                ),
                **error_responses(400),
            },
        ),
        "post": operation(
            "Book an appointment",
            tags=TAG,
            description="The customer is `customer_id`, or found or created by `phone` (and `name`).",
            body=obj(
                {
                    "service_id": ID,
                    "start": START,
                    "customer_id": {**ID, "type": ["integer", "null"]},
                    "phone": {"type": ["string", "null"], "maxLength": 40},
                    "name": {"type": ["string", "null"], "maxLength": 200},
                    "notes": {"type": ["string", "null"], "maxLength": booking.NOTES_MAX},
                    "source": {"enum": list(booking.SOURCES)},
                    "notify": NOTIFY,
                },
                ["service_id", "start"],
                closed=True,
            ),
            responses={"201": json_response(ref("Appointment"), "Booked"), **error_responses(400), **_TAKEN},
        ),
    },
    "/api/appointments/{appointment_id}": {
        "get": operation(
            "One appointment",
            tags=TAG,
            parameters=[APPOINTMENT_ID],
            responses={"200": json_response(ref("Appointment"))},
        )
    },
    "/api/appointments/{appointment_id}/move": {
        "post": operation(
            "Move an appointment (atomic: a taken new time keeps the old one)",
            tags=TAG,
            parameters=[APPOINTMENT_ID],
            body=obj({"start": START, "notify": NOTIFY}, ["start"], closed=True),
            responses={"200": json_response(ref("Appointment")), **error_responses(400), **_TAKEN},
        )
    },
    "/api/appointments/{appointment_id}/cancel": {
        "post": operation(
            "Cancel an appointment (its time is free at once)",
            tags=TAG,
            parameters=[APPOINTMENT_ID],
            body=obj({"notify": NOTIFY}, closed=True),
            body_required=False,
            responses={"200": json_response(ref("Appointment")), **error_responses(400)},
        )
    },
    "/api/appointments/slots": {
        "get": operation(
            "Free start times of a service",
            tags=TAG,
            parameters=[
                {**query_param("service_id", ID), "required": True},
                FROM,
                _days(api_bodies.MAX_SLOT_DAYS),
            ],
            responses={
                "200": json_response(
                    obj(
                        {
                            "timezone": STR,
                            "from": STR,
                            "to": STR,
                            "items": {
                                "type": "array",
                                "items": obj({"start": DT, "local": DT}, ["start", "local"]),
                            },
                        },
                        ["timezone", "from", "to", "items"],
                    )
                ),
                **error_responses(400),
            },
        )
    },
    "/api/appointments/services": {
        "get": operation(
            "The services customers book",
            tags=TAG,
            parameters=[query_param("include_archived", FLAG)],
            responses={
                "200": json_response(obj({"items": {"type": "array", "items": ref("AppointmentService")}}, ["items"])),
                **error_responses(400),
            },
        ),
        "post": operation(
            "Add a service",
            tags=TAG,
            role="owner",
            description="Send `price` (a decimal string) or `price_minor`, not both.",
            body=obj(_SERVICE_FIELDS, ["name", "duration_minutes"], closed=True),
            responses={"201": json_response(ref("AppointmentService"), "Created"), **error_responses(400)},
        ),
    },
    "/api/appointments/services/{service_id}": {
        "patch": operation(
            "Change a service",
            tags=TAG,
            role="owner",
            parameters=[SERVICE_ID],
            body=obj(_SERVICE_FIELDS, closed=True),
            responses={"200": json_response(ref("AppointmentService")), **error_responses(400)},
        ),
        "delete": operation(
            "Archive a service (its appointments stay; no new bookings)",
            tags=TAG,
            role="owner",
            parameters=[SERVICE_ID],
            responses={"200": json_response(ref("AppointmentService"))},
        ),
    },
    "/api/appointments/settings": {
        "get": operation(
            "Capacity, slot grid, time zone, weekly hours and whether a feed link exists",
            tags=TAG,
            responses={"200": json_response(ref("AppointmentSettings"))},
        ),
        "patch": operation(
            "Change the capacity (overlapping appointments allowed) or the slot grid",
            tags=TAG,
            role="owner",
            body=obj(
                {
                    "capacity": {"type": "integer", "minimum": 1, "maximum": schedule.MAX_CAPACITY},
                    "slot_minutes": {"enum": list(schedule.SLOT_MINUTES_CHOICES)},
                },
                closed=True,
            ),
            responses={"200": json_response(ref("AppointmentSettings")), **error_responses(400)},
        ),
    },
    "/api/appointments/hours": {
        "put": operation(
            "Replace the weekly opening hours (a weekday not listed is closed)",
            tags=TAG,
            role="owner",
            body=obj(
                {
                    "hours": {
                        "type": "array",
                        "items": ref("OpeningHours"),
                        "maxItems": 7 * schedule.MAX_INTERVALS_PER_DAY,
                    }
                },
                ["hours"],
                closed=True,
            ),
            responses={
                "200": json_response(obj({"hours": {"type": "array", "items": ref("OpeningHours")}}, ["hours"])),
                **error_responses(400),
            },
        )
    },
    "/api/appointments/exceptions": {
        "get": operation(
            "Closed days and special hours from `from` on",
            tags=TAG,
            parameters=[FROM, _days(366)],
            responses={
                "200": json_response(obj({"items": {"type": "array", "items": ref("ScheduleException")}}, ["items"])),
                **error_responses(400),
            },
        )
    },
    "/api/appointments/exceptions/{day}": {
        "put": operation(
            "Close a date, or open it only for special hours",
            tags=TAG,
            role="owner",
            parameters=[DAY_PARAM],
            body=obj(
                {
                    "closed": BOOL,
                    "opens": {**TIME, "type": ["string", "null"]},
                    "closes": {**TIME, "type": ["string", "null"]},
                    "note": {"type": ["string", "null"], "maxLength": schedule.NOTE_MAX},
                },
                closed=True,
            ),
            responses={"200": json_response(ref("ScheduleException")), **error_responses(400)},
        ),
        "delete": operation(
            "The date follows the weekly hours again",
            tags=TAG,
            role="owner",
            parameters=[DAY_PARAM],
            responses={"204": {"description": "Deleted"}, **error_responses(400)},
        ),
    },
    "/api/appointments/feed/rotate": {
        "post": operation(
            "A new secret calendar feed link (the old one stops working)",
            tags=TAG,
            role="owner",
            description="Only a hash of the secret is stored: the link is shown in this answer only.",
            responses={"200": json_response(obj({"url": {**STR, "description": "…/calendar/<secret>.ics"}}, ["url"]))},
        )
    },
}
