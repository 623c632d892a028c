"""PayPal Orders v2 over `requests`: OAuth2 token, create, capture, get, and webhook verification.

PayPal deprecated its Python SDK (`paypalrestsdk`, and the v1 Payments API under it) and
recommends a direct REST integration; these five calls are the whole integration. Every POST that
moves money carries a `PayPal-Request-Id`, so a retry returns the first answer instead of doing the
thing twice. Amounts cross this boundary as decimal strings.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Mapping, Optional, Protocol, overload

import requests

from server.providers.payment_http import PaymentProviderError, json_of, send

PROVIDER = "paypal"
# Renew a cached token this long before PayPal says it expires.
TOKEN_RENEW_MARGIN_SECONDS = 300
WEBHOOK_HEADERS = {
    "auth_algo": "PAYPAL-AUTH-ALGO",
    "cert_url": "PAYPAL-CERT-URL",
    "transmission_id": "PAYPAL-TRANSMISSION-ID",
    "transmission_sig": "PAYPAL-TRANSMISSION-SIG",
    "transmission_time": "PAYPAL-TRANSMISSION-TIME",
}


class HeaderLookup(Protocol):
    """A request's headers, looked up by name (an HTTP framework's case-insensitive headers)."""

    @overload
    def get(self, key: str, /) -> Optional[str]: ...

    @overload
    def get(self, key: str, default: str, /) -> str: ...


_token_cache: dict[tuple[str, str], tuple[str, float]] = {}
_token_lock = threading.Lock()


class PayPalClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, *, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.timeout = timeout
        self._http = requests.Session()

    # ---- OAuth2 client credentials ------------------------------------------------------------
    def access_token(self) -> str:
        """A bearer token, from the in-process cache while it is fresh (a miss only costs a call)."""
        key = (self.base_url, self.client_id)
        with _token_lock:
            cached = _token_cache.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        response = send(
            self._http,
            PROVIDER,
            "POST",
            f"{self.base_url}/v1/oauth2/token",
            timeout=self.timeout,
            auth=(self.client_id, self._client_secret),
            data={"grant_type": "client_credentials"},
            headers={"Accept": "application/json"},
        )
        body = json_of(response, PROVIDER)
        if response.status_code != 200 or not body.get("access_token"):
            raise PaymentProviderError(
                PROVIDER,
                f"token request refused (HTTP {response.status_code})",
                status=response.status_code,
                name=str(body.get("error", "")),
            )
        lifetime = max(int(body.get("expires_in", 0)) - TOKEN_RENEW_MARGIN_SECONDS, 0)
        with _token_lock:
            _token_cache[key] = (body["access_token"], time.monotonic() + lifetime)
        return body["access_token"]

    def _forget_token(self) -> None:
        with _token_lock:
            _token_cache.pop((self.base_url, self.client_id), None)

    def _call(
        self, method: str, path: str, *, request_id: str | None = None, json_body: Any = None, data: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        def send_once() -> requests.Response:
            headers = {
                "Authorization": f"Bearer {self.access_token()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Prefer": "return=representation",
            }
            if request_id:
                headers["PayPal-Request-Id"] = request_id
            return send(
                self._http,
                PROVIDER,
                method,
                f"{self.base_url}{path}",
                timeout=self.timeout,
                headers=headers,
                json=json_body,
                data=data,
            )

        response = send_once()
        if response.status_code == 401:  # the cached token was revoked or expired early: renew it once
            self._forget_token()
            response = send_once()
        return response.status_code, json_of(response, PROVIDER)

    def _ok(self, status: int, body: dict[str, Any], what: str) -> dict[str, Any]:
        if status in (200, 201):
            return body
        details = body.get("details") or [{}]
        issue = details[0].get("issue") if isinstance(details[0], dict) else None
        raise PaymentProviderError(
            PROVIDER,
            f"{what} refused (HTTP {status} {issue or body.get('name', '')})",
            status=status,
            name=str(issue or body.get("name", "")),
        )

    # ---- Orders v2 ----------------------------------------------------------------------------
    def create_order(
        self,
        *,
        request_id: str,
        currency: str,
        value: str,
        custom_id: str,
        description: str,
        return_url: str,
        cancel_url: str,
        brand_name: str = "",
    ) -> dict[str, Any]:
        unit = {"custom_id": custom_id, "amount": {"currency_code": currency, "value": value}}
        if description:
            unit["description"] = description[:127]  # PayPal's limit for purchase_units[].description
        experience = {
            "return_url": return_url,
            "cancel_url": cancel_url,
            "user_action": "PAY_NOW",
            "shipping_preference": "NO_SHIPPING",
            "locale": "he-IL",
        }
        if brand_name:
            experience["brand_name"] = brand_name[:127]
        order = {
            "intent": "CAPTURE",
            "purchase_units": [unit],
            "payment_source": {"paypal": {"experience_context": experience}},
        }
        return self._ok(
            *self._call("POST", "/v2/checkout/orders", request_id=request_id, json_body=order), "order creation"
        )

    def capture_order(self, order_id: str, *, request_id: str) -> dict[str, Any]:
        return self._ok(
            *self._call("POST", f"/v2/checkout/orders/{order_id}/capture", request_id=request_id, data=b"{}"), "capture"
        )

    def get_order(self, order_id: str) -> dict[str, Any]:
        return self._ok(*self._call("GET", f"/v2/checkout/orders/{order_id}"), "order lookup")

    # ---- webhooks -----------------------------------------------------------------------------
    def verify_webhook_signature(self, *, headers: HeaderLookup, raw_event: bytes, webhook_id: str) -> bool:
        """Ask PayPal whether this delivery is genuine. The event goes back byte for byte as received."""
        envelope = {name: headers.get(header, "") for name, header in WEBHOOK_HEADERS.items()}
        envelope["webhook_id"] = webhook_id
        # Splice the raw body in rather than re-serialising it: any re-encoding could change the bytes
        # PayPal signed and turn a genuine event into a FAILURE.
        body = json.dumps(envelope).encode()[:-1] + b', "webhook_event": ' + raw_event + b"}"
        status, answer = self._call("POST", "/v1/notifications/verify-webhook-signature", data=body)
        return self._ok(status, answer, "webhook verification").get("verification_status") == "SUCCESS"


def approve_link(order: Mapping[str, Any]) -> Optional[str]:
    """Where the payer approves: `approve`, or `payer-action` when payment_source was sent."""
    for link in order.get("links") or []:
        if isinstance(link, dict) and link.get("rel") in ("approve", "payer-action") and link.get("href"):
            return link["href"]
    return None


def first_capture(order: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """`purchase_units[0].payments.captures[0]`, or None when the order holds no capture."""
    try:
        capture = order["purchase_units"][0]["payments"]["captures"][0]
    except (KeyError, IndexError, TypeError):
        return None
    return capture if isinstance(capture, dict) else None
