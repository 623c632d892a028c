"""Payments: the CRM's payment-link API, the customer's `/pay/<token>` pages, and provider callbacks.

Thin: parse, authorise, call `server.payments`, answer. The rules live in the service modules. What
the path names is looked up before the body is read: an unknown provider is a 404 whatever the body.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from server.app_state import services
from server.openapi import document
from server.payments import accounts, links, notifications, pages, service
from server.routes import db_session, settings
from server.routes.auth_api import require_auth
from server.routes.payments_openapi import OPENAPI_PATHS, OPENAPI_SCHEMAS
from server.web import json_body

bp = Blueprint("payments_api", __name__)
document(bp, OPENAPI_PATHS, OPENAPI_SCHEMAS)


@bp.record_once
def _register_probe(state) -> None:
    """`/readyz` lists `warnings` (a warning, not a failure: the instance is ready)."""
    app_settings, app_state = state.app.config["SETTINGS"], services(state.app)

    def probe() -> dict:
        with app_state.database.scope() as session:
            return {"warnings": accounts.readiness_warnings(session, app_settings)}

    app_state.readiness_probes.append(probe)


def _actor() -> str:
    return f"user:{g.user.id}"


# ---- CRM API -------------------------------------------------------------------------------------
@bp.post("/api/crm/payments/create")
@require_auth()
def create_payment() -> tuple[Response, int]:
    payment, created = service.create_payment(
        db_session(),
        settings(),
        business_id=g.business_id,
        actor=_actor(),
        body=json_body(),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    return jsonify(service.payment_view(settings(), payment)), 201 if created else 200


@bp.get("/api/crm/payments/<int:payment_id>")
@require_auth()
def get_payment(payment_id: int) -> Response:
    return jsonify(service.get_payment(db_session(), settings(), g.business_id, payment_id))


@bp.post("/api/crm/payments/<int:payment_id>/confirm")
@require_auth("owner")
def confirm_payment(payment_id: int) -> Response:
    return jsonify(
        service.confirm_payment(
            db_session(), settings(), g.business_id, payment_id, _actor(), json_body(required=False)
        )
    )


@bp.post("/api/crm/payments/<int:payment_id>/reject")
@require_auth("owner")
def reject_payment(payment_id: int) -> Response:
    return jsonify(
        service.reject_payment(db_session(), settings(), g.business_id, payment_id, _actor(), json_body(required=False))
    )


@bp.get("/api/crm/payments/gateways")
@require_auth("owner")
def list_gateways() -> Response:
    return jsonify(accounts.list_gateways(db_session(), settings(), g.business_id))


@bp.put("/api/crm/payments/gateways/<provider>")
@require_auth("owner")
def put_gateway(provider: str) -> Response:
    return jsonify(
        accounts.update_gateway(
            db_session(), settings(), g.business_id, _actor(), accounts.known_provider(provider), json_body()
        )
    )


@bp.get("/api/crm/payments/settings")
@require_auth("owner")
def get_payment_settings() -> Response:
    return jsonify(service.business_payments_view(db_session(), g.business_id))


@bp.put("/api/crm/payments/settings")
@require_auth("owner")
def put_payment_settings() -> Response:
    return jsonify(service.set_business_payments(db_session(), g.business_id, _actor(), json_body()))


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
def paypal_webhook() -> Response:
    return jsonify(status=notifications.paypal_webhook(db_session(), settings(), request.get_data(), request.headers))


@bp.post("/webhook/tranzila/<nonce>")
def tranzila_notify(nonce: str) -> Response:
    fields = request.form.to_dict() if request.form else json_body()
    return jsonify(status=notifications.tranzila_notify(db_session(), settings(), nonce, fields))
