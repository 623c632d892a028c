"""`POST /api/whatsapp/send`: staff send a WhatsApp message (authenticated: an open send endpoint
would be a spam relay). The work, and every check of the body, is `server.whatsapp.send.send_whatsapp`.

A file goes with it either uploaded (`multipart/form-data`, the file in `file`, the other fields as
form fields) or named by `media_id` (a stored media item of the business); the text is its caption.
"""

from __future__ import annotations

from typing import Any, Optional

from flask import Blueprint, Response, current_app, g, jsonify, request

from server.config import Settings
from server.errors import DomainError, Problem
from server.openapi import document, json_response, nullable, obj, operation
from server.routes import db_session, settings
from server.routes.auth_api import require_auth
from server.web import json_body
from server.whatsapp.outgoing_media import outgoing_media
from server.whatsapp.send import send_whatsapp

# A form's own fields beside the file (text up to 4096 characters, to, provider…).
UPLOAD_FORM_HEADROOM = 1024 * 1024

bp = Blueprint("whatsapp_api", __name__)


@bp.post("/api/whatsapp/send")
@require_auth()
def send() -> Response:
    body, upload = message_body()
    text = body.get("text") if body.get("text") is not None else body.get("message")  # `message`: an alias
    provider = body.get("provider")
    media_id, media = outgoing_media(
        db_session(),
        settings(),
        current_app.config["APP_SECRET"],
        g.business_id,
        upload=upload,
        media_id=body.get("media_id"),
    )
    result = send_whatsapp(
        db_session(),
        settings(),
        g.business_id,
        to=body.get("to", ""),
        text=text,
        provider="auto" if provider in (None, "") else provider,
        content_sid=body.get("content_sid"),
        content_variables=body.get("content_variables"),
        idempotency_key=request.headers.get("Idempotency-Key"),
        sender_user_id=g.user.id,
        media=media,
        media_id=media_id,
    )
    return jsonify(result.to_json())


def message_body() -> tuple[dict[str, Any], Optional[tuple[bytes, Optional[str], Optional[str]]]]:
    """A JSON body, or a multipart form with the file in `file`: `(fields, upload)`, where upload is
    `(bytes, file name, declared type)` or None."""
    if request.mimetype != "multipart/form-data":
        return json_body(), None
    cfg: Settings = settings()
    request.max_content_length = max(cfg.max_content_length, cfg.media_max_bytes + UPLOAD_FORM_HEADROOM)
    fields: dict[str, Any] = request.form.to_dict()
    if fields.get("media_id", "") == "":
        fields.pop("media_id", None)
    file = request.files.get("file")
    if file is None:
        return fields, None
    data = file.stream.read(cfg.media_max_bytes + 1)
    if len(data) > cfg.media_max_bytes:
        raise DomainError(
            Problem.TOO_LARGE, "media_too_large", f"the file is larger than {cfg.media_max_bytes} bytes", field="file"
        )
    return fields, (data, file.filename or None, file.mimetype or None)


# `success: false` comes with every refusal and failure of the send; a body that is not a JSON object
# gets the plain error shape. `field` names the body field an `invalid_field` (or other 400) is about.
_SEND_ERROR = obj(
    {
        "success": {"const": False},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "provider": {"type": "string"},
        "message_id": {"type": "integer"},
    },
    ["error", "message"],
)

OPENAPI_PATHS = {
    "/api/whatsapp/send": {
        "post": operation(
            "Send a WhatsApp message to a customer",
            tags=["whatsapp"],
            description=(
                "Sends through `provider`, or for `auto` through the first suitable provider in "
                "WA_PROVIDER_PRIORITY: Baileys is skipped while its bridge is not connected, Twilio for "
                "free-form text outside the 24-hour window (send a template: `content_sid`). The next provider "
                "is tried only when the previous one certainly did not send. The message is stored in the "
                "customer's WhatsApp thread, also when the send fails (502)."
            ),
            parameters=[
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    "description": "Repeating a request with the same key answers the first result and sends nothing.",
                }
            ],
            body=obj(
                {
                    "to": {"type": "string", "description": "whatsapp:+9725…, +9725…, 05… or a WhatsApp LID (…@lid)"},
                    "text": nullable({"type": "string", "maxLength": 4096}),
                    "message": nullable({"type": "string", "maxLength": 4096, "description": "same as text"}),
                    "provider": nullable({"type": "string", "enum": ["auto", "twilio", "baileys"], "default": "auto"}),
                    "content_sid": nullable({"type": "string", "description": "Twilio Content template SID (HX…)"}),
                    "content_variables": {
                        "type": ["object", "string", "null"],
                        "description": 'template variables, e.g. {"1": "Dana"}',
                    },
                    "media_id": nullable(
                        {"type": "integer", "description": "send this stored media item (text is its caption)"}
                    ),
                },
                ["to"],
            ),
            responses={
                "200": json_response(
                    obj(
                        {
                            "success": {"const": True},
                            "provider": {"type": "string"},
                            "message_id": {"type": "integer"},
                            "provider_message_id": {"type": "string"},
                        },
                        ["success", "provider", "message_id", "provider_message_id"],
                    ),
                    "Sent",
                ),
                **{
                    str(code): json_response(_SEND_ERROR, why)
                    for code, why in (
                        (
                            400,
                            "A missing, empty or wrong-typed field (invalid_field, with field), or an invalid "
                            "to/provider/content_variables/Idempotency-Key, or text over 4096 characters",
                        ),
                        (404, "media_id names no media item of the business"),
                        (409, "A request with this Idempotency-Key is still being sent, or media_id is not stored"),
                        (413, "The uploaded file is larger than MEDIA_MAX_BYTES (media_too_large)"),
                        (415, "The uploaded file is of a type that is not sent (media_not_allowed)"),
                        (
                            422,
                            "Outside the 24-hour window a template is needed; or the key was used for another message",
                        ),
                        (501, "The chosen provider (or every provider) is not enabled"),
                        (502, "The send failed (send_failed) or may have gone out (outcome_unknown); stored as failed"),
                        (503, "No provider can send now (e.g. the Baileys bridge is not connected)"),
                    )
                },
            },
        ),
    },
}
# A file may be uploaded with the message: multipart/form-data, the file in `file`, the rest as form fields.
OPENAPI_PATHS["/api/whatsapp/send"]["post"]["requestBody"]["content"]["multipart/form-data"] = {
    "schema": obj(
        {
            "file": {"type": "string", "format": "binary", "description": "up to MEDIA_MAX_BYTES; the type is sniffed"},
            "to": {"type": "string"},
            "text": {"type": "string", "maxLength": 4096, "description": "the caption"},
            "provider": {"type": "string", "enum": ["auto", "twilio", "baileys"]},
        },
        ["to", "file"],
    )
}
document(bp, OPENAPI_PATHS)
