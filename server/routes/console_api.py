"""The console's own endpoints beside the CRM API: a call's recording, the WhatsApp connection screen,
one-step payment links, and disabling users or resetting their password. Thin: parse, authorise,
call `server.console`, answer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request, send_file

from server.console import payment_links, recordings, users, whatsapp_connection
from server.openapi import document, error_responses, json_response, nullable, obj, operation, path_param, ref
from server.routes import db_session, settings
from server.routes.auth_api import require_auth
from server.web import json_body

bp = Blueprint("console_api", __name__)
CRM = "/api/crm"


# ---- calls: the recording ------------------------------------------------------------------------


@bp.get(f"{CRM}/calls/<call_sid>/recording")
@require_auth()
def call_recording(call_sid: str) -> Response:
    path, content_type = recordings.recording_file(db_session(), settings(), g.business_id, call_sid)
    response = send_file(path, mimetype=content_type, conditional=True, etag=True, max_age=None)
    response.headers["Cache-Control"] = "private, max-age=86400"  # a recording never changes
    response.headers["Content-Disposition"] = "inline"
    return response


# ---- WhatsApp connection -------------------------------------------------------------------------


@bp.get(f"{CRM}/whatsapp/connection")
@require_auth("owner")
def whatsapp_connection_status() -> Response:
    return jsonify(whatsapp_connection.connection_status(db_session(), settings(), g.business_id))


@bp.get(f"{CRM}/whatsapp/qr.svg")
@require_auth("owner")
def whatsapp_qr() -> Response:
    return Response(
        whatsapp_connection.qr_svg(settings(), g.business_id),
        mimetype="image/svg+xml",
        headers={
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


# ---- payment links in one step -------------------------------------------------------------------


@bp.post(f"{CRM}/invoices/<int:invoice_id>/payment-link")
@require_auth()
def invoice_payment_link(invoice_id: int) -> tuple[Response, int]:
    status, body = payment_links.invoice_payment_link(
        db_session(), settings(), g.business_id, g.user, invoice_id, json_body(), request.headers.get("Idempotency-Key")
    )
    return jsonify(body), status


@bp.post(f"{CRM}/threads/<int:thread_id>/payment-link")
@require_auth()
def thread_payment_link(thread_id: int) -> tuple[Response, int]:
    status, body = payment_links.thread_payment_link(
        db_session(), settings(), g.business_id, g.user, thread_id, json_body(), request.headers.get("Idempotency-Key")
    )
    return jsonify(body), status


# ---- users ---------------------------------------------------------------------------------------


@bp.patch(f"{CRM}/users/<int:user_id>")
@require_auth("owner")
def update_user(user_id: int) -> Response:
    return jsonify(users.update_user(db_session(), g.business_id, g.user, user_id, json_body()))


@bp.post(f"{CRM}/users/<int:user_id>/password")
@require_auth("owner")
def reset_password(user_id: int) -> Response:
    users.reset_password(db_session(), g.business_id, g.user, user_id, json_body())
    return Response(status=204)


# ---- OpenAPI -------------------------------------------------------------------------------------

_ID = {"type": "integer", "minimum": 1}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    "description": "A repeat with the same key answers the same payment (200) and sends nothing again.",
}
_PROVIDER_IN = {
    "type": ["string", "null"],
    "enum": ["paypal", "tranzila", None],
    "description": "default: the business's default provider",
}
_LINK_PAYMENT = obj(
    {
        "payment_id": {"type": "integer"},
        "status": {"type": "string"},
        "url": {"type": "string", "format": "uri"},
        "provider": {"type": "string"},
        "amount_minor": {"type": "integer"},
        "currency": {"type": "string"},
    },
    ["payment_id", "status", "url", "provider", "amount_minor", "currency"],
)
_LINK_ANSWER = obj(
    {
        "payment": _LINK_PAYMENT,
        "url": {"type": "string", "format": "uri"},
        "whatsapp": nullable(
            obj(
                {
                    "status": {"type": "string", "enum": ["sent", "failed"]},
                    "message_id": {
                        "type": ["integer", "null"],
                        "description": "the stored message (also when the send failed)",
                    },
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                },
                ["status", "message_id"],
            )
        ),
    },
    ["payment", "url", "whatsapp"],
)
_LINK_ERRORS = {
    **error_responses(400, 409, 501),
    "403": json_response(
        ref("Error"),
        "The caller's role is too low, or payments are off for the business (payments_disabled_for_business)",
    ),
}
_LINK_DESCRIPTION = (
    "Creates the payment (the same checks as POST /api/crm/payments/create) and commits it, then "
    "sends the link on WhatsApp. A refused or failed send keeps the payment: `whatsapp.status` is "
    "`failed` with the reason. 409 no_whatsapp_recipient when the customer has no phone or "
    "WhatsApp address."
)
_STR = {"type": "string"}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/crm/calls/{call_sid}/recording": {
        "get": operation(
            "The call's recording (its voicemail) as audio",
            tags=["calls"],
            description="MP3 audio, fetched from Twilio once and kept on the server; answers HTTP Range requests "
            "(206) so a player can seek. 404 no_recording when the call has none.",
            parameters=[path_param("call_sid", {"type": "string", "minLength": 1, "maxLength": 64})],
            responses={
                "200": {
                    "description": "The audio",
                    "content": {"audio/mpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                "206": {
                    "description": "Part of the audio (a Range request)",
                    "content": {"audio/mpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                **error_responses(416, 502),
            },
        )
    },
    "/api/crm/whatsapp/connection": {
        "get": operation(
            "Whether the business's WhatsApp is connected, and whether a QR code waits to be scanned",
            tags=["whatsapp"],
            role="owner",
            description="status: connected, qr (scan /api/crm/whatsapp/qr.svg with the phone's WhatsApp → Linked "
            "devices), connecting, logged_out, not_set_up (the bridge runs no WhatsApp instance for this business "
            "yet; an admin adds one) or disabled (no WhatsApp provider enabled). Always the signed-in user's own "
            "business.",
            responses={
                "200": json_response(
                    obj(
                        {
                            "provider": {"type": ["string", "null"], "enum": ["baileys", "twilio", None]},
                            "status": {
                                "type": "string",
                                "enum": ["connected", "qr", "connecting", "logged_out", "not_set_up", "disabled"],
                            },
                            "qr_available": {"type": "boolean"},
                        },
                        ["provider", "status", "qr_available"],
                    )
                )
            },
        )
    },
    "/api/crm/whatsapp/qr.svg": {
        "get": operation(
            "The QR code that links a phone to the business's WhatsApp, as an SVG image",
            tags=["whatsapp"],
            role="owner",
            description="A new code every ~20 s while logging in: fetch it again while "
            "/api/crm/whatsapp/connection says qr.",
            responses={
                "200": {"description": "The QR code", "content": {"image/svg+xml": {"schema": _STR}}},
                **error_responses(501, 503),
            },
        )
    },
    "/api/crm/invoices/{invoice_id}/payment-link": {
        "post": operation(
            "Create the invoice's payment link and, if asked, send it to the customer on WhatsApp",
            tags=["payments"],
            description=_LINK_DESCRIPTION,
            parameters=[path_param("invoice_id", _ID), _IDEMPOTENCY],
            body=obj({"provider": _PROVIDER_IN, "send_whatsapp": {"type": "boolean", "default": False}}, closed=True),
            responses={
                "201": json_response(_LINK_ANSWER, "Created"),
                "200": json_response(_LINK_ANSWER, "The payment of a repeated Idempotency-Key"),
                **_LINK_ERRORS,
            },
        )
    },
    "/api/crm/threads/{thread_id}/payment-link": {
        "post": operation(
            "Create a payment link for the conversation's customer and send it to them on WhatsApp",
            tags=["payments"],
            description=_LINK_DESCRIPTION,
            parameters=[path_param("thread_id", _ID), _IDEMPOTENCY],
            body=obj(
                {
                    "amount": {
                        "type": ["string", "integer"],
                        "examples": ["49.90"],
                        "description": "major units, at most two decimals",
                    },
                    "currency": {"type": "string", "enum": ["ILS", "USD", "EUR", "GBP"], "default": "ILS"},
                    "description": {"type": "string", "minLength": 1, "maxLength": 500},
                    "provider": _PROVIDER_IN,
                },
                ["amount", "description"],
                closed=True,
            ),
            responses={
                "201": json_response(_LINK_ANSWER, "Created"),
                "200": json_response(_LINK_ANSWER, "The payment of a repeated Idempotency-Key"),
                **_LINK_ERRORS,
            },
        )
    },
    "/api/crm/users/{user_id}": {
        "patch": operation(
            "Disable or enable a user",
            tags=["users"],
            role="owner",
            description="A disabled user can't sign in, and their sessions and tokens stop working. Owners manage "
            "agents and only admins manage owners (403), and nobody disables themselves (409 cannot_disable_self).",
            parameters=[path_param("user_id", _ID)],
            body=obj({"disabled": {"type": "boolean"}}, ["disabled"], closed=True),
            responses={"200": json_response(ref("User")), **error_responses(400, 409)},
        )
    },
    "/api/crm/users/{user_id}/password": {
        "post": operation(
            "Set a new password for a user (and sign them out everywhere)",
            tags=["users"],
            role="owner",
            description="Ends the user's console sessions and login tokens; API tokens made on purpose stay. Owners "
            "reset agents' passwords and only admins owners' (403); one's own password is changed with "
            "POST /api/auth/password, which asks for the current one (403 here).",
            parameters=[path_param("user_id", _ID)],
            body=obj({"password": {"type": "string", "minLength": 8, "maxLength": 200}}, ["password"], closed=True),
            responses={"204": {"description": "Password changed"}, **error_responses(400)},
        )
    },
}
document(bp, OPENAPI_PATHS)
