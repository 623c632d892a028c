"""A local fake of PayPal's REST API (Orders v2, OAuth2, webhook verification) with PayPal's JSON shapes.

Point the app at it with the production setting `PAYPAL_API_BASE_URL=<fake.url>`.

    POST /v1/oauth2/token                        HTTP Basic client_id:secret, grant_type=client_credentials
    POST /v2/checkout/orders                     Bearer; PayPal-Request-Id makes a repeat return the first order
    GET  /v2/checkout/orders/{id}                Bearer
    POST /v2/checkout/orders/{id}/capture        Bearer; 422 ORDER_NOT_APPROVED / ORDER_ALREADY_CAPTURED
    POST /v1/notifications/verify-webhook-signature   Bearer; SUCCESS only for a delivery this fake signed,
                                                 with the same event, headers and webhook id
    GET  /checkoutnow?token={id}                 the payer's approval page: approving redirects to the
                                                 order's return_url (`?cancel=1`: to its cancel_url)

A wrong Basic credential answers 401 `invalid_client`; a missing or unknown bearer token 401
`AUTHENTICATION_FAILURE`. Webhooks: the fake queues the events PayPal would send (CHECKOUT.ORDER.APPROVED
on approval, PAYMENT.CAPTURE.COMPLETED / DENIED / PENDING on capture, PAYMENT.CAPTURE.REFUNDED on
`refund()`) in `outbox`; `signed(event)` gives the raw body and PAYPAL-* headers to POST to the app.
`capture_status` and `capture_amount` change what the next captures report (declines, tampering).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import urlencode

from flask import jsonify, redirect, request

from testkit.fakes.payment_fake_http import FakeHttpServer

CURRENCIES = ("ILS", "USD", "EUR", "GBP")
_VALUE = re.compile(r"^[0-9]{1,10}(\.[0-9]{2})?$")
_SIGNING_KEY = secrets.token_bytes(32)  # stands in for PayPal's certificate key


def _paypal_id(length: int = 17) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(length))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakePayPal(FakeHttpServer):
    name = "fake-paypal"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        webhook_id: str = "WH-FAKE-1",
    ):
        super().__init__()
        self.accounts: dict[str, tuple[str, str]] = {}  # client_id → (secret, webhook_id)
        self.add_account(client_id, client_secret, webhook_id)
        self.client_id, self.client_secret, self.webhook_id = client_id, client_secret, webhook_id
        self.tokens: dict[str, str] = {}  # access token → client_id (kept across reset(): tokens outlive tests)
        self._state_lock = threading.Lock()
        self._routes()
        self.reset()

    def add_account(self, client_id: str, client_secret: str, webhook_id: str) -> None:
        self.accounts[client_id] = (client_secret, webhook_id)

    def reset(self) -> None:
        super().reset()
        self.orders: dict[str, dict[str, Any]] = {}
        self.order_owner: dict[str, str] = {}
        self.idempotent: dict[tuple[str, str, str], tuple[int, dict]] = {}
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.outbox: list[dict[str, Any]] = []
        self.capture_status = "COMPLETED"
        self.capture_amount: Optional[dict[str, str]] = None
        self.token_requests = 0

    def error_body(self, status: int) -> dict[str, Any]:
        return {
            "name": "INTERNAL_SERVER_ERROR",
            "message": "An internal server error occurred.",
            "debug_id": uuid.uuid4().hex[:13],
        }

    # ---- test helpers ------------------------------------------------------------------------
    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.outbox if e["event_type"] == event_type]

    def signed(self, event: dict[str, Any], *, webhook_id: Optional[str] = None) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers PayPal would POST for `event`, signed for `webhook_id`."""
        raw = json.dumps(event, separators=(",", ":")).encode()
        transmission_id = str(uuid.uuid1())
        transmission_time = _now()
        webhook_id = webhook_id or self.webhook_id
        # PayPal signs "<transmission id>|<time>|<webhook id>|<CRC32 of the body>".
        message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(raw)}".encode()
        signature = base64.b64encode(hmac.new(_SIGNING_KEY, message, hashlib.sha256).digest()).decode()
        headers = {
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-CERT-URL": f"{self.url}/v1/notifications/certs/CERT-360caa42-fca2a594-fake",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-SIG": signature,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "Content-Type": "application/json",
        }
        with self._state_lock:
            self.deliveries[transmission_id] = {"event": json.loads(raw), "headers": headers, "webhook_id": webhook_id}
        return raw, headers

    def refund(self, capture_id: str, *, value: Optional[str] = None) -> dict[str, Any]:
        """Queue (and return) the PAYMENT.CAPTURE.REFUNDED event of a refund of `capture_id`."""
        capture = self._capture_by_id(capture_id)
        refund = {
            "id": _paypal_id(),
            "status": "COMPLETED",
            "amount": {
                "currency_code": capture["amount"]["currency_code"],
                "value": value or capture["amount"]["value"],
            },
            "custom_id": capture.get("custom_id"),
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {"href": f"{self.url}/v2/payments/refunds/{_paypal_id()}", "rel": "self", "method": "GET"},
                {"href": f"{self.url}/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"},
            ],
        }
        return self._queue("PAYMENT.CAPTURE.REFUNDED", "refund", refund, f"A $ {refund['amount']['value']} refund")

    def _capture_by_id(self, capture_id: str) -> dict[str, Any]:
        for order in self.orders.values():
            for unit in order.get("purchase_units", []):
                for capture in unit.get("payments", {}).get("captures", []):
                    if capture["id"] == capture_id:
                        return capture
        raise KeyError(capture_id)

    def _queue(self, event_type: str, resource_type: str, resource: dict[str, Any], summary: str) -> dict[str, Any]:
        event = {
            "id": f"WH-{_paypal_id(17)}-{_paypal_id(17)}",
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": copy.deepcopy(resource),
            "links": [{"href": f"{self.url}/v1/notifications/webhooks-events/x", "rel": "self", "method": "GET"}],
        }
        self.outbox.append(event)
        return event

    # ---- the API ------------------------------------------------------------------------------
    def _bearer_client(self) -> Optional[str]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.tokens.get(token) if scheme == "Bearer" else None

    @staticmethod
    def _auth_failure():
        response = jsonify(
            {
                "name": "AUTHENTICATION_FAILURE",
                "message": "Authentication failed due to invalid authentication credentials or a "
                "missing Authorization header.",
                "links": [{"href": "https://developer.paypal.com/docs/api/overview/#error", "rel": "information_link"}],
            }
        )
        response.status_code = 401
        return response

    @staticmethod
    def _unprocessable(issue: str, description: str):
        response = jsonify(
            {
                "name": "UNPROCESSABLE_ENTITY",
                "details": [{"issue": issue, "description": description}],
                "message": "The requested action could not be performed, semantically incorrect, or "
                "failed business validation.",
                "debug_id": uuid.uuid4().hex[:13],
            }
        )
        response.status_code = 422
        return response

    @staticmethod
    def _invalid(field: str, issue: str):
        response = jsonify(
            {
                "name": "INVALID_REQUEST",
                "message": "Request is not well-formed, syntactically incorrect, or violates schema.",
                "details": [{"field": field, "issue": issue}],
                "debug_id": uuid.uuid4().hex[:13],
            }
        )
        response.status_code = 400
        return response

    def _order_view(self, order_id: str) -> dict[str, Any]:
        order = copy.deepcopy(self.orders[order_id])
        order.pop("_experience", None)
        return order

    def _routes(self) -> None:
        app = self.app

        @app.post("/v1/oauth2/token", endpoint="token")
        def token():
            self.token_requests += 1
            auth = request.authorization
            account = self.accounts.get(auth.username) if auth and auth.type == "basic" else None
            if account is None or account[0] != auth.password or request.form.get("grant_type") != "client_credentials":
                response = jsonify({"error": "invalid_client", "error_description": "Client Authentication failed"})
                response.status_code = 401
                return response
            access_token = "A21AA" + secrets.token_urlsafe(40)
            self.tokens[access_token] = auth.username
            return jsonify(
                {
                    "scope": "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/"
                    "services/payments/refund",
                    "access_token": access_token,
                    "token_type": "Bearer",
                    "app_id": "APP-80W284485P519543T",
                    "expires_in": 32400,
                    "nonce": f"{_now()}{secrets.token_urlsafe(16)}",
                }
            )

        @app.post("/v2/checkout/orders", endpoint="create_order")
        def create_order():
            client_id = self._bearer_client()
            if client_id is None:
                return self._auth_failure()
            request_id = request.headers.get("PayPal-Request-Id", "")
            if request_id and (client_id, "create", request_id) in self.idempotent:
                status, body = self.idempotent[(client_id, "create", request_id)]
                return jsonify(body), 200
            body = request.get_json(silent=True) or {}
            units = body.get("purchase_units") or []
            if body.get("intent") != "CAPTURE":
                return self._invalid("/intent", "INVALID_PARAMETER_VALUE")
            if len(units) != 1 or not isinstance(units[0].get("amount"), dict):
                return self._invalid("/purchase_units", "MISSING_REQUIRED_PARAMETER")
            amount = units[0]["amount"]
            if amount.get("currency_code") not in CURRENCIES:
                return self._unprocessable("CURRENCY_NOT_SUPPORTED", "Currency code is not supported.")
            if not isinstance(amount.get("value"), str) or not _VALUE.match(amount["value"]):
                return self._unprocessable(
                    "DECIMAL_PRECISION",
                    "If the currency supports decimals, only two decimal place precision is supported.",
                )
            experience = ((body.get("payment_source") or {}).get("paypal") or {}).get("experience_context") or {}
            if not experience.get("return_url") or not experience.get("cancel_url"):
                return self._invalid(
                    "/payment_source/paypal/experience_context/return_url", "MISSING_REQUIRED_PARAMETER"
                )
            order_id = _paypal_id()
            order = {
                "id": order_id,
                "intent": "CAPTURE",
                "status": "PAYER_ACTION_REQUIRED",
                "payment_source": {"paypal": {}},
                "create_time": _now(),
                "purchase_units": [
                    {
                        "reference_id": "default",
                        "amount": dict(amount),
                        **{k: units[0][k] for k in ("custom_id", "description") if k in units[0]},
                    }
                ],
                "links": [
                    {"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "self", "method": "GET"},
                    {"href": f"{self.url}/checkoutnow?token={order_id}", "rel": "payer-action", "method": "GET"},
                ],
                "_experience": experience,
            }
            with self._state_lock:
                self.orders[order_id] = order
                self.order_owner[order_id] = client_id
                answer = {
                    k: v
                    for k, v in self._order_view(order_id).items()
                    if k in ("id", "status", "payment_source", "links")
                }
                if request_id:
                    self.idempotent[(client_id, "create", request_id)] = (200, answer)
            return jsonify(answer), 201

        @app.get("/v2/checkout/orders/<order_id>", endpoint="get_order")
        def get_order(order_id: str):
            client_id = self._bearer_client()
            if client_id is None:
                return self._auth_failure()
            if self.order_owner.get(order_id) != client_id:
                return jsonify(
                    {
                        "name": "RESOURCE_NOT_FOUND",
                        "details": [{"issue": "INVALID_RESOURCE_ID"}],
                        "message": "The specified resource does not exist.",
                    }
                ), 404
            return jsonify(self._order_view(order_id))

        @app.get("/checkoutnow", endpoint="approve")
        def approve():
            order_id = request.args.get("token", "")
            order = self.orders.get(order_id)
            if order is None:
                return "unknown order", 404
            experience = order["_experience"]
            if request.args.get("cancel"):
                return redirect(f"{experience['cancel_url']}?{urlencode({'token': order_id})}")
            if order["status"] == "PAYER_ACTION_REQUIRED":
                order["status"] = "APPROVED"
                order["payer"] = {
                    "name": {"given_name": "Noa", "surname": "Levi"},
                    "email_address": "payer@example.test",
                    "payer_id": "FAKEPAYER123",
                }
                self._queue(
                    "CHECKOUT.ORDER.APPROVED",
                    "checkout-order",
                    self._order_view(order_id),
                    "An order has been approved by buyer",
                )
            return redirect(f"{experience['return_url']}?{urlencode({'token': order_id, 'PayerID': 'FAKEPAYER123'})}")

        @app.post("/v2/checkout/orders/<order_id>/capture", endpoint="capture")
        def capture(order_id: str):
            client_id = self._bearer_client()
            if client_id is None:
                return self._auth_failure()
            request_id = request.headers.get("PayPal-Request-Id", "")
            key = (client_id, f"capture:{order_id}", request_id)
            with self._state_lock:
                if request_id and key in self.idempotent:
                    status, body = self.idempotent[key]
                    return jsonify(body), status
                if self.order_owner.get(order_id) != client_id:
                    return jsonify(
                        {
                            "name": "RESOURCE_NOT_FOUND",
                            "details": [{"issue": "INVALID_RESOURCE_ID"}],
                            "message": "The specified resource does not exist.",
                        }
                    ), 404
                order = self.orders[order_id]
                if order["status"] == "COMPLETED":
                    return self._unprocessable("ORDER_ALREADY_CAPTURED", "Order already captured.")
                if order["status"] != "APPROVED":
                    return self._unprocessable(
                        "ORDER_NOT_APPROVED", "Payer has not yet approved the Order for payment."
                    )
                unit = order["purchase_units"][0]
                capture = {
                    "id": _paypal_id(),
                    "status": self.capture_status,
                    "amount": dict(self.capture_amount or unit["amount"]),
                    "final_capture": True,
                    "seller_protection": {
                        "status": "ELIGIBLE",
                        "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
                    },
                    "create_time": _now(),
                    "update_time": _now(),
                    "links": [{"href": f"{self.url}/v2/payments/captures/x", "rel": "self", "method": "GET"}],
                }
                if "custom_id" in unit:
                    capture["custom_id"] = unit["custom_id"]
                unit["payments"] = {"captures": [capture]}
                order["status"] = "COMPLETED"
                answer = self._order_view(order_id)
                self.idempotent[key] = (201, answer)
            event_type = {"COMPLETED": "PAYMENT.CAPTURE.COMPLETED", "DECLINED": "PAYMENT.CAPTURE.DENIED"}.get(
                capture["status"], "PAYMENT.CAPTURE.PENDING"
            )
            self._queue(
                event_type,
                "capture",
                {**capture, "supplementary_data": {"related_ids": {"order_id": order_id}}},
                f"Payment {capture['status'].lower()} for {capture['amount']['value']}",
            )
            return jsonify(answer), 201

        @app.post("/v1/notifications/verify-webhook-signature", endpoint="verify_webhook")
        def verify_webhook():
            client_id = self._bearer_client()
            if client_id is None:
                return self._auth_failure()
            body = request.get_json(silent=True) or {}
            required = (
                "auth_algo",
                "cert_url",
                "transmission_id",
                "transmission_sig",
                "transmission_time",
                "webhook_id",
                "webhook_event",
            )
            missing = [name for name in required if not body.get(name)]
            if missing:
                return jsonify(
                    {
                        "name": "VALIDATION_ERROR",
                        "message": "Invalid request - see details",
                        "details": [{"field": name, "issue": "Required field is missing"} for name in missing],
                    }
                ), 400
            delivery = self.deliveries.get(body["transmission_id"])
            headers = delivery["headers"] if delivery else {}
            genuine = (
                delivery is not None
                and body["webhook_id"] == delivery["webhook_id"]
                and body["webhook_id"] == self.accounts[client_id][1]
                and body["webhook_event"] == delivery["event"]
                and body["transmission_sig"] == headers["PAYPAL-TRANSMISSION-SIG"]
                and body["transmission_time"] == headers["PAYPAL-TRANSMISSION-TIME"]
                and body["cert_url"] == headers["PAYPAL-CERT-URL"]
                and body["auth_algo"] == headers["PAYPAL-AUTH-ALGO"]
            )
            return jsonify({"verification_status": "SUCCESS" if genuine else "FAILURE"})
