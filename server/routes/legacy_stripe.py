"""Stripe was removed; its old routes answer 410 Gone so stale webhooks stop retrying. No Stripe code."""
from __future__ import annotations

from flask import Blueprint

from server.web import ApiError

bp = Blueprint("legacy_stripe", __name__)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/api/webhook/stripe", methods=ALL_METHODS)
@bp.route("/api/webhook/stripe/<path:_rest>", methods=ALL_METHODS)
@bp.route("/api/payments/stripe", methods=ALL_METHODS)
@bp.route("/api/payments/stripe/<path:_rest>", methods=ALL_METHODS)
@bp.route("/api/payments/stripe<path:_rest>", methods=ALL_METHODS)
def gone(_rest: str = ""):
    raise ApiError(410, "gone", "Stripe payments were removed; use PayPal or Tranzila")
