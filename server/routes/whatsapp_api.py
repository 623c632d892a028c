"""`POST /api/whatsapp/send`: staff send a WhatsApp message (authenticated: an open send endpoint
would be a spam relay). The work is `server.whatsapp.send.send_whatsapp`."""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from server.routes import db_session, settings
from server.security.auth import require_auth
from server.web import ApiError, json_body
from server.whatsapp.send import send_whatsapp

bp = Blueprint("whatsapp_api", __name__)


@bp.post("/api/whatsapp/send")
@require_auth()
def send() -> Response:
    body = json_body()
    text = body.get("text", body.get("message"))
    for name, value in (("to", body.get("to")), ("text", text), ("provider", body.get("provider")),
                        ("content_sid", body.get("content_sid"))):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"invalid_{name}", f"{name} must be a string", success=False)
    result = send_whatsapp(db_session(), settings(), g.business_id, to=body.get("to") or "", text=text,
                           provider=body.get("provider") or "auto", content_sid=body.get("content_sid"),
                           content_variables=body.get("content_variables"),
                           idempotency_key=request.headers.get("Idempotency-Key"), sender_user_id=g.user.id)
    response = jsonify(result.to_json())
    response.status_code = result.status_code
    return response


_ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "success": {"const": False}, "error": {"type": "string"}, "message": {"type": "string"},
    "provider": {"type": ["string", "null"]}, "message_id": {"type": "integer"}}}

OPENAPI_PATHS = {
    "/api/whatsapp/send": {
        "post": {
            "summary": "Send a WhatsApp message to a customer",
            "description": (
                "Sends through `provider`, or for `auto` through the first suitable provider in "
                "WA_PROVIDER_PRIORITY: Baileys is skipped while its bridge is not connected, Twilio "
                "for free-form text outside the 24-hour window (send a template: `content_sid`). "
                "The next provider is tried only when the previous one certainly did not send. "
                "The message is stored in the customer's WhatsApp thread, also when the send fails."),
            "security": [{"bearer": []}],
            "parameters": [{
                "name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "Repeating a request with the same key answers the first result and sends nothing."}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["to"],
                "properties": {
                    "to": {"type": "string", "examples": ["whatsapp:+972501234567", "+972501234567", "0501234567"]},
                    "text": {"type": "string", "maxLength": 4096},
                    "message": {"type": "string", "description": "Same as text."},
                    "provider": {"type": "string", "enum": ["auto", "twilio", "baileys"], "default": "auto"},
                    "content_sid": {"type": "string", "description": "Twilio Content template SID (HX…)."},
                    "content_variables": {"type": ["object", "string"],
                                          "description": 'Template variables, e.g. {"1": "Dana"}.'},
                }}}}},
            "responses": {
                "200": {"description": "Sent", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["success", "provider", "message_id", "provider_message_id"],
                    "properties": {"success": {"const": True}, "provider": {"type": "string"},
                                   "message_id": {"type": "integer"},
                                   "provider_message_id": {"type": "string"}}}}}},
                **{code: {"description": why, "content": {"application/json": {"schema": _ERROR}}} for code, why in (
                    ("400", "Missing or invalid to/text/provider/content_variables/Idempotency-Key"),
                    ("401", "No or bad bearer token"),
                    ("409", "A request with this Idempotency-Key is still being sent"),
                    ("422", "Outside the 24-hour window a template is needed; or the key was used for another message"),
                    ("501", "The chosen provider (or every provider) is not enabled"),
                    ("502", "The send failed (`send_failed`) or may have failed (`outcome_unknown`); "
                            "the message is stored as failed"),
                    ("503", "No provider can send now (e.g. the Baileys bridge is not connected)"))},
            },
        },
    },
}
