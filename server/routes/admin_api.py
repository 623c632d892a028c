"""`/api/admin/*`: the service's own work across businesses, for users with the `admin` role.

Assigning phone numbers lives here because a number decides whose calls and messages a business
receives: an owner who could claim one would receive another's customers. Thin: parse,
authorise, call `server.crm`, answer.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from server.crm import business
from server.openapi import document, error_responses, json_response, obj, operation, path_param
from server.routes import db_session, settings
from server.routes.auth_api import require_auth
from server.security.auth import MAX_ID
from server.web import json_body
from server.whatsapp import bridge_instances

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


# ---- WhatsApp instances on the Baileys bridge -----------------------------------------------------
# Adding one links a WhatsApp account to a business: like a number, it decides whose messages the
# business receives, so only an admin does it; the owner then scans the QR code on their own screen.


@bp.get("/api/admin/whatsapp/instances")
@require_auth("admin")
def whatsapp_instances():
    return jsonify({"items": bridge_instances.list_instances(settings())})


@bp.post("/api/admin/businesses/<int:business_id>/whatsapp/instance")
@require_auth("admin")
def add_whatsapp_instance(business_id: int):
    return jsonify(bridge_instances.add_instance(db_session(), settings(), business_id, f"user:{g.user.id}"))


@bp.post("/api/admin/businesses/<int:business_id>/whatsapp/instance/logout")
@require_auth("admin")
def logout_whatsapp_instance(business_id: int):
    return jsonify(bridge_instances.logout_instance(db_session(), settings(), business_id, f"user:{g.user.id}"))


@bp.delete("/api/admin/businesses/<int:business_id>/whatsapp/instance")
@require_auth("admin")
def remove_whatsapp_instance(business_id: int):
    return jsonify(bridge_instances.remove_instance(db_session(), settings(), business_id, f"user:{g.user.id}"))


_INSTANCE = obj(
    {
        "business_id": {"type": "integer"},
        "state": {"type": "string", "description": "connecting, open, close or logged_out"},
        "me": {"type": ["string", "null"], "description": "the linked account's number, once connected"},
        "qr_available": {"type": "boolean"},
    },
    ["business_id", "state", "me", "qr_available"],
)
_REMOVED = obj({"business_id": {"type": "integer"}, "removed": {"type": "boolean"}}, ["business_id", "removed"])
_BUSINESS_ID = path_param("business_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})
_INSTANCE_ERRORS = error_responses(404, 501, 503)

document(
    bp,
    {
        "/api/admin/whatsapp/instances": {
            "get": operation(
                "List the WhatsApp instances on the Baileys bridge",
                tags=["admin"],
                role="admin",
                description="One instance per business, each its own linked WhatsApp account, as the bridge reports "
                "them now. 503 bridge_unavailable when the bridge does not answer.",
                responses={
                    "200": json_response(obj({"items": {"type": "array", "items": _INSTANCE}}, ["items"])),
                    **error_responses(501, 503),
                },
            )
        },
        "/api/admin/businesses/{business_id}/whatsapp/instance": {
            "post": operation(
                "Add a business's WhatsApp instance on the Baileys bridge",
                tags=["admin"],
                role="admin",
                description="Starts the business's own WhatsApp session on the bridge (idempotent); the owner then "
                "links the phone by scanning the QR code on the console's WhatsApp screen. Audited as "
                "whatsapp.instance_added.",
                parameters=[_BUSINESS_ID],
                responses={"200": json_response(_INSTANCE), **_INSTANCE_ERRORS},
            ),
            "delete": operation(
                "Remove a business's WhatsApp instance",
                tags=["admin"],
                role="admin",
                description="Logs the account out when connected, stops the session and deletes its files on the "
                "bridge. 404 unknown_instance when the bridge runs none for the business. Audited as "
                "whatsapp.instance_removed.",
                parameters=[_BUSINESS_ID],
                responses={"200": json_response(_REMOVED), **_INSTANCE_ERRORS},
            ),
        },
        "/api/admin/businesses/{business_id}/whatsapp/instance/logout": {
            "post": operation(
                "Log a business's WhatsApp account out",
                tags=["admin"],
                role="admin",
                description="The phone's linked device goes away and the session files are deleted; the instance "
                "then waits for a new QR code to be scanned. Audited as whatsapp.instance_logged_out.",
                parameters=[_BUSINESS_ID],
                responses={"200": json_response(_INSTANCE), **_INSTANCE_ERRORS},
            )
        },
    },
)
