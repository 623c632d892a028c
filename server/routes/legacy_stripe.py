"""Stripe was removed; its old routes answer 410 Gone so stale webhooks stop retrying. No Stripe code."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint

from server.errors import DomainError, Problem
from server.openapi import document, error_responses, openapi_paths, operation, path_param

bp = Blueprint("legacy_stripe", __name__)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Every old Stripe path; the routes and their documentation are both made from this list.
RULES = (
    "/api/webhook/stripe",
    "/api/webhook/stripe/<path:_rest>",
    "/api/payments/stripe",
    "/api/payments/stripe/<path:_rest>",
    "/api/payments/stripe<path:_rest>",
)


def gone(_rest: str = ""):
    raise DomainError(Problem.GONE, "gone", "Stripe payments were removed; use PayPal or Tranzila")


for _rule in RULES:
    bp.add_url_rule(_rule, "gone", gone, methods=ALL_METHODS)


def _gone_item(path: str) -> dict[str, Any]:
    parameters = [
        path_param(name, {"type": "string", "minLength": 1}, "anything after the old path")
        for name in re.findall(r"{(\w+)}", path)
    ]
    return {
        method: operation(
            "Retired Stripe route: always 410 Gone",
            tags=["legacy"],
            role=None,
            parameters=parameters,
            responses=error_responses(404, 410),
        )
        for method in ("get", "post", "put", "patch", "delete")
    }


document(bp, {path: _gone_item(path) for rule in RULES for path in openapi_paths(rule)})
