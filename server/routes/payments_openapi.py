"""OpenAPI path items and schemas of the payment-link API (`server/routes/payments_api.py` documents its
blueprint with them). HTTP documentation, so it lives with the routes; the limits come from the
services. The customer's `/pay/*` pages and the provider callbacks are not `/api/*` routes and are
not in the document.
"""

from __future__ import annotations

from typing import Any

from server import money
from server.openapi import error_responses, json_response, obj, operation, path_param, ref
from server.payments.accounts import GATEWAY_FIELDS, LABELS, PROVIDERS, TRANZILA_MODES
from server.payments.service import MAX_DESCRIPTION, MAX_IDEMPOTENCY_KEY, MAX_NOTE
from server.payments.states import STATUSES
from server.security.auth import MAX_ID

_PROVIDER = {"type": "string", "enum": list(PROVIDERS)}
_STATUSES = list(STATUSES)
_DT_N = {"type": ["string", "null"], "format": "date-time"}
_INT_N = {"type": ["integer", "null"]}

_PAYMENT = obj(
    {
        "payment_id": {"type": "integer"},
        "status": {
            "type": "string",
            "enum": _STATUSES,
            "description": "awaiting_confirm: reported by the gateway, not confirmed with it (an owner "
            "confirms it); refund_required: money taken that can't be kept (a void invoice, "
            "an invoice paid already, a closed link); rejected: an owner found no such "
            "charge in the gateway's reports (final, no money)",
        },
        "url": {"type": "string", "format": "uri", "description": "the stable link to send the customer"},
        "provider": _PROVIDER,
        "amount_minor": {"type": "integer", "description": "agorot (cents)"},
        "currency": {"type": "string"},
        "description": {"type": "string"},
        "customer_id": _INT_N,
        "invoice_id": _INT_N,
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": _DT_N,
        "paid_at": _DT_N,
    },
    ["payment_id", "status", "url", "provider", "amount_minor", "currency"],
)
_GATEWAY = obj(
    {
        "provider": _PROVIDER,
        "enabled": {"type": "boolean"},
        "settings": {"type": "object", "description": "the non-secret fields"},
        "secrets_set": {
            "type": "object",
            "additionalProperties": {"type": "boolean"},
            "description": "whether each secret is stored; secrets are never returned",
        },
        "business_credentials_complete": {"type": "boolean"},
        "system_credentials_available": {"type": "boolean"},
    }
)
_BUSINESS_PAYMENTS = obj(
    {
        "payments_enabled": {"type": "boolean"},
        "default_payment_provider": {"type": ["string", "null"], "enum": [*PROVIDERS, None]},
    }
)

OPENAPI_SCHEMAS: dict[str, Any] = {
    "PaymentLink": _PAYMENT,
    "PaymentGateway": _GATEWAY,
    "PaymentSettings": _BUSINESS_PAYMENTS,
}

_CREATE_INPUT = obj(
    {
        "amount": {
            "type": ["string", "integer"],
            "examples": ["49.90"],
            "description": "major units: a decimal string with at most two decimals, or a whole number; "
            'not a JSON fraction (send "49.9", not 49.9); or send amount_minor',
        },
        "amount_minor": {"type": "integer", "minimum": 1, "maximum": money.MAX_AMOUNT_MINOR, "examples": [4990]},
        "currency": {"type": "string", "enum": list(money.CURRENCIES), "default": money.DEFAULT_CURRENCY},
        "provider": {
            "type": ["string", "null"],
            "enum": [*PROVIDERS, None],
            "description": "default: the business's default provider, else paypal",
        },
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "customer_id": _INT_N,
        "invoice_id": {
            **_INT_N,
            "description": "an issued, unpaid invoice: marked paid when this payment is paid; "
            "its amount is the default",
        },
    },
    closed=True,
)
_CONFIRM_INPUT = obj(
    {"note": {"type": "string", "maxLength": MAX_NOTE, "description": "what was checked (kept in the audit log)"}},
    closed=True,
)
_PAYMENT_ID = path_param("payment_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID})
_GATEWAY_INPUT = obj(
    {
        "enabled": {"type": "boolean"},
        **{
            name: {
                "type": ["string", "null"],
                "description": f"{LABELS[provider]}, write-only" if secret else LABELS[provider],
            }
            for provider, fields in GATEWAY_FIELDS.items()
            for name, secret in fields.items()
        },
        "mode": {"type": ["string", "null"], "enum": [*TRANZILA_MODES, None], "description": "Tranzila"},
    }
)

_PAYMENTS = "/api/crm/payments"
_TAGS = ["payments"]


def _awaiting_confirm_operation(summary: str, outcome: str) -> dict[str, Any]:
    """The owner's hand decision on a payment in awaiting_confirm: confirm and reject take the same note."""
    return operation(
        summary,
        tags=_TAGS,
        role="owner",
        body=_CONFIRM_INPUT,
        body_required=False,
        parameters=[_PAYMENT_ID],
        description=f"{outcome} Audited with the caller and the note. 409 "
        "payment_not_awaiting_confirmation (with the current status) for any other payment.",
        responses={"200": json_response(ref("PaymentLink")), **error_responses(400, 409)},
    )


OPENAPI_PATHS: dict[str, Any] = {
    f"{_PAYMENTS}/create": {
        "post": operation(
            "Create a payment link (PayPal or Tranzila)",
            tags=_TAGS,
            body=_CREATE_INPUT,
            description="Checks in this order: 401; 404 (another business's customer or invoice); 501 "
            "payments_disabled (switched off on the server); 403 payments_disabled_for_business; "
            '400 invalid_field for the provider / 501 provider_not_configured ("PayPal not configured", '
            '"Tranzila not configured"); 400 invalid_field for the amount, currency or description, '
            "invalid_idempotency_key for the key; 409 invoice_already_paid, or invoice_not_payable for an "
            "invoice that is not issued (draft, void).",
            parameters=[
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
                    "description": "A repeat with the same key answers the same payment (200).",
                }
            ],
            responses={
                "201": json_response(ref("PaymentLink"), "Created"),
                "200": json_response(ref("PaymentLink"), "The payment of a repeated Idempotency-Key"),
                **error_responses(400, 409, 501),
            },
        )
    },
    f"{_PAYMENTS}/{{payment_id}}": {
        "get": operation(
            "A payment and its status",
            tags=_TAGS,
            parameters=[_PAYMENT_ID],
            responses={"200": json_response(ref("PaymentLink"))},
        )
    },
    f"{_PAYMENTS}/{{payment_id}}/confirm": {
        "post": _awaiting_confirm_operation(
            "Confirm by hand a payment awaiting confirmation",
            "For a payment in awaiting_confirm (a Tranzila terminal without API keys: the server could "
            "not confirm the charge with Tranzila). Check the charge in the terminal's own reports "
            "first. The payment becomes paid (and its invoice paid), or refund_required when its "
            "invoice was voided or paid meanwhile.",
        )
    },
    f"{_PAYMENTS}/{{payment_id}}/reject": {
        "post": _awaiting_confirm_operation(
            "Reject a payment awaiting confirmation that the gateway doesn't show",
            "For a payment in awaiting_confirm whose charge is not in the terminal's own reports: the "
            "notification was forged. The payment becomes rejected (final; no money; its invoice keeps "
            "its status, so a new link can be sent).",
        )
    },
    f"{_PAYMENTS}/gateways": {
        "get": operation(
            "The business's provider credentials (secrets only as set / not set)",
            tags=_TAGS,
            role="owner",
            responses={
                "200": json_response(obj({"gateways": {"type": "array", "items": ref("PaymentGateway")}}, ["gateways"]))
            },
        )
    },
    f"{_PAYMENTS}/gateways/{{provider}}": {
        "put": operation(
            "Store the business's own credentials for a provider",
            tags=_TAGS,
            role="owner",
            body=_GATEWAY_INPUT,
            description="Fields sent replace the stored ones (null clears); fields left out stay. Secrets "
            "(PayPal client_secret, Tranzila secret) are write-only.",
            parameters=[path_param("provider", _PROVIDER)],
            responses={"200": json_response(ref("PaymentGateway")), **error_responses(400)},
        )
    },
    f"{_PAYMENTS}/settings": {
        "get": operation(
            "Whether payments are enabled for the business, and its default provider",
            tags=_TAGS,
            role="owner",
            responses={"200": json_response(ref("PaymentSettings"))},
        ),
        "put": operation(
            "Enable or disable payments for the business; choose the default provider",
            tags=_TAGS,
            role="owner",
            body={**_BUSINESS_PAYMENTS, "additionalProperties": False},
            responses={"200": json_response(ref("PaymentSettings")), **error_responses(400)},
        ),
    },
}
