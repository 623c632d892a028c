"""`GET /api/crm/events`: the console's live updates as server-sent events (`server.console.live`)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, g, request

from server.console.live import EventHub, sse_stream
from server.errors import DomainError, Problem
from server.openapi import document, error_responses, operation
from server.routes import app_services
from server.routes.auth_api import require_auth, token_policy

bp = Blueprint("events_api", __name__)
_EVENT_ID = re.compile(r"^[0-9]{1,18}$", re.ASCII)


def _hub() -> EventHub:
    """This worker's one hub (made on first use, after the fork, so each worker has its own poller)."""
    state = app_services()
    if state.event_hub is None:
        lifecycle = state.lifecycle
        state.event_hub = EventHub(state.database, draining=lambda: lifecycle.draining, policy=token_policy())
    return state.event_hub


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    if not _EVENT_ID.match(raw.strip()):
        raise DomainError(
            Problem.INVALID,
            "invalid_field",
            "Last-Event-ID must be an event id this stream sent",
            field="Last-Event-ID",
        )
    return int(raw.strip())


@bp.get("/api/crm/events")
@require_auth()
def events() -> Response:
    last_event_id = _last_event_id()
    # nginx: pass each event on at once, not when its buffer fills.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":  # no body to send, so no stream to hold open
        return Response(mimetype="text/event-stream", headers=headers)
    stream = sse_stream(_hub(), g.business_id, g.token_digest, last_event_id)
    return Response(stream, mimetype="text/event-stream", headers=headers)


# One event of the stream (as a client parses it); `data` is a JSON object of ids.
_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["ready", "message", "message_status", "thread", "call", "payment", "appointment"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer"},
    },
}

OPENAPI_PATHS = {
    "/api/crm/events": {
        "get": operation(
            "Live updates for the console (server-sent events)",
            tags=["console"],
            description="A `text/event-stream` of the caller's business's changes, each `id:`-numbered: "
            "`message` {thread_id, message_id}, `message_status` {thread_id, message_id, status, error?}, "
            "`thread` {thread_id}, `call` {call_sid}, `payment` {payment_id, status, invoice_id?}, "
            "`appointment` {appointment_id, status}. The first "
            "event, `ready` {last_event_id, replayed}, comes once the stream is live (after any replay). "
            "A reconnect with `Last-Event-ID` first replays what was missed (events are kept a day). "
            "A comment line every 15 s keeps the connection open. The stream ends when the session is "
            "revoked or expires (an open stream doesn't keep an idle session alive) or the worker shuts "
            "down; the browser reconnects by itself. Works with the session "
            "cookie or a bearer token.",
            parameters=[
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "description": "the id of the last event received (EventSource sends it on reconnect)",
                }
            ],
            responses={
                "200": {
                    "description": "The event stream",
                    "content": {"text/event-stream": {"schema": _EVENT}},
                },
                **error_responses(400),
            },
        )
    }
}
document(bp, OPENAPI_PATHS)
