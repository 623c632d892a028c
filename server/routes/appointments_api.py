"""`/api/appointments/*`: the appointment book (day and week lists, free slots, book, move, cancel;
services, opening hours, exceptions, capacity and the calendar feed's link), and the feed itself,
`GET /calendar/<secret>.ics`. Thin: parse, authorise, call `server.appointments`, answer.

Roles: `agent` reads the book and books, moves and cancels appointments; `owner` also manages
services, hours, exceptions, capacity and the feed link. Times in bodies are ISO 8601 with an
offset; dates are local dates of the business (`Business.timezone`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, g, jsonify, request

from server import appointments
from server.appointments import api_bodies, feed, schedule
from server.openapi import document
from server.routes import app_services, db_session, settings
from server.routes.appointments_openapi import OPENAPI_PATHS, OPENAPI_SCHEMAS
from server.routes.auth_api import require_auth
from server.urls import abs_url
from server.web import json_body

bp = Blueprint("appointments_api", __name__)
document(bp, OPENAPI_PATHS, OPENAPI_SCHEMAS)
API = "/api/appointments"


def _zone():
    return schedule.business_zone(db_session(), g.business_id)


def _answer(view: appointments.AppointmentView):
    return jsonify(view.to_json(_zone()))


# ---- appointments -------------------------------------------------------------------------------


@bp.get(API)
@require_auth()
def list_appointments():
    session = db_session()
    first, last = api_bodies.query_range(session, g.business_id, request.args, api_bodies.MAX_LIST_DAYS)
    include_cancelled = api_bodies.query_flag(request.args, "include_cancelled")
    views = appointments.list_appointments(session, g.business_id, (first, last), include_cancelled=include_cancelled)
    zone = _zone()
    return jsonify(
        {
            "timezone": zone.key,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "items": [view.to_json(zone) for view in views],
        }
    )


@bp.post(API)
@require_auth()
def create_appointment():
    view = api_bodies.create(db_session(), g.business_id, json_body(), app_services().jobs)
    return _answer(view), 201


@bp.get(f"{API}/<int:appointment_id>")
@require_auth()
def get_appointment(appointment_id: int):
    return _answer(appointments.appointment_view(db_session(), g.business_id, appointment_id))


@bp.post(f"{API}/<int:appointment_id>/move")
@require_auth()
def move_appointment(appointment_id: int):
    appointments.get_appointment(db_session(), g.business_id, appointment_id)  # 404 before 400
    view = api_bodies.move(db_session(), g.business_id, appointment_id, json_body(), app_services().jobs)
    return _answer(view)


@bp.post(f"{API}/<int:appointment_id>/cancel")
@require_auth()
def cancel_appointment(appointment_id: int):
    appointments.get_appointment(db_session(), g.business_id, appointment_id)
    view = api_bodies.cancel(
        db_session(), g.business_id, appointment_id, json_body(required=False), app_services().jobs
    )
    return _answer(view)


@bp.get(f"{API}/slots")
@require_auth()
def free_slots():
    session = db_session()
    service_id = api_bodies.query_service_id(request.args)
    first, last = api_bodies.query_range(session, g.business_id, request.args, api_bodies.MAX_SLOT_DAYS)
    found = appointments.find_slots(session, g.business_id, service_id, (first, last))
    zone = _zone()
    return jsonify(
        {
            "timezone": zone.key,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "items": [{"start": slot.isoformat(), "local": slot.astimezone(zone).isoformat()} for slot in found],
        }
    )


# ---- services -----------------------------------------------------------------------------------


@bp.get(f"{API}/services")
@require_auth()
def list_services():
    archived = api_bodies.query_flag(request.args, "include_archived")
    services = appointments.list_services(db_session(), g.business_id, include_archived=archived)
    return jsonify({"items": [schedule.service_json(service) for service in services]})


@bp.post(f"{API}/services")
@require_auth("owner")
def create_service():
    return jsonify(schedule.service_json(appointments.create_service(db_session(), g.business_id, json_body()))), 201


@bp.patch(f"{API}/services/<int:service_id>")
@require_auth("owner")
def update_service(service_id: int):
    appointments.get_service(db_session(), g.business_id, service_id)
    service = appointments.update_service(db_session(), g.business_id, service_id, json_body())
    return jsonify(schedule.service_json(service))


@bp.delete(f"{API}/services/<int:service_id>")
@require_auth("owner")
def archive_service(service_id: int):
    return jsonify(schedule.service_json(appointments.archive_service(db_session(), g.business_id, service_id)))


# ---- settings: capacity, grid, hours, exceptions, feed ------------------------------------------


@bp.get(f"{API}/settings")
@require_auth()
def get_settings():
    return jsonify(api_bodies.settings_json(db_session(), g.business_id))


@bp.patch(f"{API}/settings")
@require_auth("owner")
def update_settings():
    appointments.update_book(db_session(), g.business_id, json_body())
    return jsonify(api_bodies.settings_json(db_session(), g.business_id))


@bp.put(f"{API}/hours")
@require_auth("owner")
def set_hours():
    return jsonify(api_bodies.set_hours(db_session(), g.business_id, json_body()))


@bp.get(f"{API}/exceptions")
@require_auth()
def list_exceptions():
    session = db_session()
    first, last = api_bodies.query_range(session, g.business_id, request.args, 366)
    rows = appointments.list_exceptions(session, g.business_id, start=first, end=last)
    return jsonify({"items": [schedule.exception_json(row) for row in rows]})


@bp.put(f"{API}/exceptions/<day>")
@require_auth("owner")
def set_exception(day: str):
    return jsonify(schedule.exception_json(appointments.set_exception(db_session(), g.business_id, day, json_body())))


@bp.delete(f"{API}/exceptions/<day>")
@require_auth("owner")
def delete_exception(day: str):
    appointments.delete_exception(db_session(), g.business_id, day)
    return "", 204


@bp.post(f"{API}/feed/rotate")
@require_auth("owner")
def rotate_feed():
    token = feed.rotate_feed_token(db_session(), g.business_id)
    return jsonify({"url": abs_url(settings().base_url, f"/calendar/{token}.ics")})


# ---- the calendar feed (the secret in the URL is the credential) --------------------------------


@bp.get("/calendar/<token>.ics")
def calendar_feed(token: str):
    session = db_session()
    business_id = feed.business_for_token(session, token)
    if business_id is None:
        abort(404)
    host = urlsplit(settings().base_url).hostname or "agentlocator"  # UIDs stay the same however it is reached
    body = feed.calendar_ics(session, business_id, host)
    return Response(
        body,
        mimetype="text/calendar",
        headers={"Cache-Control": "private, max-age=300", "Content-Disposition": 'inline; filename="appointments.ics"'},
    )
