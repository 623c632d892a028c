"""`/api/admin/*`: the service's own work across businesses, for users with the `admin` role.

Assigning phone numbers lives here because a number decides whose calls and messages a business
receives: an owner who could claim one would receive another's customers. Thin: parse,
authorise, call `server.crm`, answer.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.crm import business
from server.openapi import document, error_responses, json_response, obj, operation, path_param
from server.routes import db_session
from server.routes.auth_api import require_auth
from server.security.auth import MAX_ID
from server.web import json_body

bp = Blueprint("admin_api", __name__)


@bp.put("/api/admin/businesses/<int:business_id>/numbers")
@require_auth("admin")
def assign_numbers(business_id: int):
    return jsonify(business.assign_numbers(db_session(), business_id, f"user:{g.user.id}", json_body()))


@bp.put("/api/admin/businesses/<int:business_id>/whatsapp_sender")
@require_auth("admin")
def set_whatsapp_sender(business_id: int):
    return jsonify(business.set_twilio_sender(db_session(), business_id, f"user:{g.user.id}", json_body()))


_NUMBERS = {
    "type": "array",
    "maxItems": business.NUMBERS_MAX,
    "items": {"type": "string", "description": "a phone number, any format; stored as E.164"},
}
_ASSIGNED = obj(
    {
        "id": {"type": "integer"},
        **{field: {"type": "array", "items": {"type": "string"}} for field in business.NUMBER_FIELDS},
    },
    ["id", *business.NUMBER_FIELDS],
)

document(
    bp,
    {
        "/api/admin/businesses/{business_id}/numbers": {
            "put": operation(
                "Assign a business's voice and WhatsApp numbers",
                tags=["admin"],
                role="admin",
                description="Each list sent becomes the business's numbers of that kind; a kind not sent is kept. A "
                "number another business answers on is 409 number_taken, with that business's id "
                "(business_id). Audited in the business as business.numbers_assigned.",
                parameters=[path_param("business_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})],
                body=obj({field: _NUMBERS for field in business.NUMBER_FIELDS}, closed=True, minProperties=1),
                responses={"200": json_response(_ASSIGNED), **error_responses(400, 409)},
            )
        },
        "/api/admin/businesses/{business_id}/whatsapp_sender": {
            "put": operation(
                "Set a business's Twilio WhatsApp sender",
                tags=["admin"],
                role="admin",
                description="The business's replies and staff messages through Twilio go out from this sender: "
                "a Messaging Service SID (MG…, Twilio picks the number from its pool) or one of the business's "
                "WhatsApp numbers (another is 422 not_a_business_number). null clears it: the business then "
                "sends from its first WhatsApp number, or from the deployment's TWILIO_WA_FROM when it has none. "
                "Audited in the business as business.twilio_sender_set.",
                parameters=[path_param("business_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})],
                body=obj(
                    {"twilio_sender": {"type": ["string", "null"], "maxLength": 40}},
                    ["twilio_sender"],
                    closed=True,
                ),
                responses={
                    "200": json_response(
                        obj(
                            {"id": {"type": "integer"}, "twilio_sender": {"type": ["string", "null"]}},
                            ["id", "twilio_sender"],
                        )
                    ),
                    **error_responses(400, 422),
                },
            )
        },
    },
)
