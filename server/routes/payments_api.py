"""Payments: the CRM's payment-link API, the customer's `/pay/<token>` pages, and provider callbacks.

Thin: parse, authorise, call `server.payments`, answer. The rules live in the service modules.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from server.payments import links, notifications, pages, service
from server.payments.accounts import PROVIDERS, gateway_row, gateway_view, update_gateway
from server.routes import db_session, settings
from server.security.auth import require_auth
from server.web import ApiError, json_body

bp = Blueprint("payments_api", __name__)


# ---- CRM API -------------------------------------------------------------------------------------
@bp.post("/api/crm/payments/create")
@require_auth()
def create_payment() -> tuple[Response, int]:
    payment, created = service.create_payment(db_session(), settings(), business_id=g.business_id,
                                              actor=f"user:{g.user.id}", body=json_body(),
                                              idempotency_key=request.headers.get("Idempotency-Key"))
    return jsonify(service.payment_view(settings(), payment)), 201 if created else 200


@bp.get("/api/crm/payments/<int:payment_id>")
@require_auth()
def get_payment(payment_id: int) -> Response:
    return jsonify(service.payment_view(settings(), service.get_payment(db_session(), g.business_id, payment_id)))


@bp.get("/api/crm/payments/gateways")
@require_auth("owner")
def list_gateways() -> Response:
    session = db_session()
    return jsonify({"gateways": [gateway_view(gateway_row(session, g.business_id, provider), settings(), provider)
                                 for provider in PROVIDERS]})


@bp.put("/api/crm/payments/gateways/<provider>")
@require_auth("owner")
def put_gateway(provider: str) -> Response:
    if provider not in PROVIDERS:
        raise ApiError(404, "not_found", f"no such provider; use one of {', '.join(PROVIDERS)}")
    row = update_gateway(db_session(), g.business_id, f"user:{g.user.id}", provider, json_body())
    return jsonify(gateway_view(row, settings(), provider))


@bp.get("/api/crm/payments/settings")
@require_auth("owner")
def get_payment_settings() -> Response:
    return jsonify(service.business_payments_view(db_session(), g.business_id))


@bp.put("/api/crm/payments/settings")
@require_auth("owner")
def put_payment_settings() -> Response:
    service.set_business_payments(db_session(), g.business_id, f"user:{g.user.id}", json_body())
    return jsonify(service.business_payments_view(db_session(), g.business_id))


# ---- the customer's link -------------------------------------------------------------------------
@bp.get("/pay/<token>")
def open_link(token: str) -> Response:
    preview = links.is_link_preview(request.method, request.user_agent.string)
    return pages.render(db_session(), links.open_link(db_session(), settings(), token, preview=preview))


@bp.get("/pay/<token>/return")
def paypal_return(token: str) -> Response:
    order_id = request.args.get("token", "")
    return pages.render(db_session(), links.paypal_return(db_session(), settings(), token, order_id))


@bp.route("/pay/<token>/done", methods=["GET", "POST"])
def payment_done(token: str) -> Response:
    return pages.render(db_session(), links.return_page(db_session(), token, "done"))


@bp.route("/pay/<token>/failed", methods=["GET", "POST"])
def payment_failed(token: str) -> Response:
    return pages.render(db_session(), links.return_page(db_session(), token, "failed"))


@bp.get("/pay/<token>/cancel")
def payment_cancelled(token: str) -> Response:
    return pages.render(db_session(), links.return_page(db_session(), token, "cancel"))


# ---- provider callbacks --------------------------------------------------------------------------
@bp.post("/webhook/paypal")
def paypal_webhook() -> tuple[Response, int]:
    status, body = notifications.paypal_webhook(db_session(), settings(), request.get_data(), request.headers)
    return jsonify(body), status


@bp.post("/webhook/tranzila/<nonce>")
def tranzila_notify(nonce: str) -> tuple[Response, int]:
    fields = request.form.to_dict() if request.form else json_body()
    status, body = notifications.tranzila_notify(db_session(), settings(), nonce, fields)
    return jsonify(body), status


# ---- OpenAPI -------------------------------------------------------------------------------------
def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_AUTH_ERRORS = {"401": _error("No token, or an unknown or revoked one"),
                "403": _error("The caller's role is too low")}
_PROVIDER = {"type": "string", "enum": list(PROVIDERS)}
_PAYMENT = {"type": "object", "required": ["payment_id", "status", "url", "provider", "amount_minor", "currency"],
            "properties": {
                "payment_id": {"type": "integer"},
                "status": {"type": "string", "enum": ["created", "pending", "paid", "failed", "expired", "refunded"]},
                "url": {"type": "string", "format": "uri", "description": "the stable link to send the customer"},
                "provider": _PROVIDER, "amount_minor": {"type": "integer", "description": "agorot (cents)"},
                "currency": {"type": "string"}, "description": {"type": "string"},
                "customer_id": {"type": ["integer", "null"]}, "invoice_id": {"type": ["integer", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
                "paid_at": {"type": ["string", "null"], "format": "date-time"}}}
_GATEWAY = {"type": "object", "properties": {
    "provider": _PROVIDER, "enabled": {"type": "boolean"},
    "settings": {"type": "object", "description": "the non-secret fields"},
    "secrets_set": {"type": "object", "additionalProperties": {"type": "boolean"},
                    "description": "whether each secret is stored; secrets are never returned"},
    "business_credentials_complete": {"type": "boolean"},
    "system_credentials_available": {"type": "boolean"}}}
_BUSINESS_PAYMENTS = {"type": "object", "properties": {
    "payments_enabled": {"type": "boolean"}, "default_payment_provider": {"type": ["string", "null"],
                                                                          "enum": [*PROVIDERS, None]}}}
_BEARER = [{"bearer": []}]

OPENAPI_PATHS = {
    "/api/crm/payments/create": {"post": {
        "summary": "Create a payment link (PayPal or Tranzila)", "tags": ["payments"], "security": _BEARER,
        "description": "Checks in this order: 401; 404 (another business's customer or invoice); 501 "
                       "payments_disabled (switched off on the server); 403 payments_disabled_for_business; "
                       "400 invalid_provider / 501 provider_not_configured (\"PayPal not configured\", "
                       "\"Tranzila not configured\"); 400 for the amount, currency, description or key; 409 for an "
                       "invoice already paid. Role: agent or above.",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                        "description": "A repeat with the same key answers the same payment (200)."}],
        "requestBody": _body({"type": "object", "additionalProperties": False, "properties": {
            "amount": {"type": ["string", "integer"], "examples": ["49.90"],
                       "description": "major units, at most two decimals; or send amount_minor"},
            "amount_minor": {"type": "integer", "minimum": 1, "examples": [4990]},
            "currency": {"type": "string", "enum": ["ILS", "USD", "EUR", "GBP"], "default": "ILS"},
            "provider": {"type": ["string", "null"], "enum": [*PROVIDERS, None],
                         "description": "default: the business's default provider, else paypal"},
            "description": {"type": "string", "maxLength": 500},
            "customer_id": {"type": ["integer", "null"]},
            "invoice_id": {"type": ["integer", "null"],
                           "description": "marked paid when this payment is paid; its amount is the default"}}}),
        "responses": {"201": _ok(_PAYMENT, "Created"),
                      "200": _ok(_PAYMENT, "The payment of a repeated Idempotency-Key"),
                      **_AUTH_ERRORS, "400": _error("Invalid amount, currency, provider, description or key"),
                      "404": _error("No such customer or invoice in the caller's business"),
                      "409": _error("Invoice already paid, or the key was used for another payment"),
                      "501": _error("Payments switched off on the server, or the provider not configured")}}},
    "/api/crm/payments/{payment_id}": {"get": {
        "summary": "A payment and its status", "tags": ["payments"], "security": _BEARER,
        "parameters": [{"name": "payment_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": _ok(_PAYMENT), **_AUTH_ERRORS,
                      "404": _error("No such payment in the caller's business")}}},
    "/api/crm/payments/gateways": {"get": {
        "summary": "The business's provider credentials (secrets only as set / not set)", "tags": ["payments"],
        "security": _BEARER, "description": "Role: owner or above.",
        "responses": {"200": _ok({"type": "object", "properties": {"gateways": {"type": "array", "items": _GATEWAY}}}),
                      **_AUTH_ERRORS}}},
    "/api/crm/payments/gateways/{provider}": {"put": {
        "summary": "Store the business's own credentials for a provider", "tags": ["payments"], "security": _BEARER,
        "description": "Fields sent replace the stored ones (null clears); fields left out stay. Secrets "
                       "(PayPal client_secret, Tranzila secret) are write-only. Role: owner or above.",
        "parameters": [{"name": "provider", "in": "path", "required": True, "schema": _PROVIDER}],
        "requestBody": _body({"type": "object", "properties": {
            "enabled": {"type": "boolean"},
            "client_id": {"type": ["string", "null"], "description": "PayPal"},
            "client_secret": {"type": ["string", "null"], "description": "PayPal, write-only"},
            "webhook_id": {"type": ["string", "null"], "description": "PayPal"},
            "terminal": {"type": ["string", "null"], "description": "Tranzila"},
            "app_key": {"type": ["string", "null"], "description": "Tranzila"},
            "secret": {"type": ["string", "null"], "description": "Tranzila, write-only"},
            "mode": {"type": ["string", "null"], "enum": ["iframe", "payment_request", None],
                     "description": "Tranzila"}}}),
        "responses": {"200": _ok(_GATEWAY), **_AUTH_ERRORS, "400": _error("Unknown or invalid field"),
                      "404": _error("No such provider")}}},
    "/api/crm/payments/settings": {
        "get": {"summary": "Whether payments are enabled for the business, and its default provider",
                "tags": ["payments"], "security": _BEARER, "description": "Role: owner or above.",
                "responses": {"200": _ok(_BUSINESS_PAYMENTS), **_AUTH_ERRORS}},
        "put": {"summary": "Enable or disable payments for the business; choose the default provider",
                "tags": ["payments"], "security": _BEARER, "description": "Role: owner or above.",
                "requestBody": _body({**_BUSINESS_PAYMENTS, "additionalProperties": False}),
                "responses": {"200": _ok(_BUSINESS_PAYMENTS), **_AUTH_ERRORS,
                              "400": _error("Unknown or invalid field")}}},
}
