"""Tranzila over `requests`: the API's HMAC headers, Handshake V2, Payment Request and transaction query.

Authentication (docs.tranzila.com, "Authentication"; the same for API v1 and v2): four headers,
`X-tranzila-api-app-key`, `-request-time` (Unix seconds: the official sample and every working
client use seconds, although two pages say milliseconds), `-nonce` (40 random bytes as 80 hex
characters) and `-access-token` = hex HMAC-SHA256 with message = app key and key = secret + time
+ nonce. No maintained Python library exists, so this is the whole client.

Tranzila wants amounts as JSON numbers in major units; they are written straight from `Decimal`
(see `_json`), never through a float.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from decimal import Decimal
from typing import Any, Optional
from urllib.parse import quote, urlencode

import requests

from server.providers.payment_http import PaymentProviderError, json_of, send

PROVIDER = "tranzila"
# The iframe's `currency` parameter (and the notify POST's) is numeric.
CURRENCY_CODES = {"ILS": "1", "USD": "2", "EUR": "978", "GBP": "826"}
APPROVED = "000"


def access_token(app_key: str, secret: str, request_time: str, nonce: str) -> str:
    """The documented access token: HMAC-SHA256(message=app_key, key=secret + time + nonce), lowercase hex."""
    return hmac.new((secret + request_time + nonce).encode(), app_key.encode(), hashlib.sha256).hexdigest()


def auth_headers(app_key: str, secret: str) -> dict[str, str]:
    request_time = str(int(time.time()))
    nonce = secrets.token_hex(40)
    return {
        "X-tranzila-api-app-key": app_key,
        "X-tranzila-api-request-time": request_time,
        "X-tranzila-api-nonce": nonce,
        "X-tranzila-api-access-token": access_token(app_key, secret, request_time, nonce),
    }


def iframe_url(iframe_base_url: str, terminal: str, params: dict[str, str]) -> str:
    """The hosted payment page (`iframenew.php`) for `terminal` with these parameters."""
    return f"{iframe_base_url.rstrip('/')}/{quote(terminal, safe='')}/iframenew.php?{urlencode(params)}"


def _json(value: Any) -> str:
    """JSON text in which a `Decimal` is written as a number with its exact digits."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


class TranzilaClient:
    def __init__(self, base_url: str, app_key: str, secret: str, *, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self._secret = secret
        self.timeout = timeout
        self._http = requests.Session()

    def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **auth_headers(self.app_key, self._secret),
        }
        response = send(
            self._http,
            PROVIDER,
            "POST",
            f"{self.base_url}{path}",
            timeout=self.timeout,
            headers=headers,
            data=_json(body).encode(),
        )
        answer = json_of(response, PROVIDER)
        code = answer.get("error_code", 0)
        if response.status_code != 200 or str(code) != "0":
            raise PaymentProviderError(
                PROVIDER,
                f"{what} refused (HTTP {response.status_code}, error_code {code}: "
                f"{str(answer.get('message', ''))[:120]})",
                status=response.status_code,
                name=str(code),
            )
        return answer

    def create_handshake(self, *, terminal: str, amount: Decimal) -> str:
        """Handshake V2: lock the amount; the returned `thtk` goes with the iframe parameters."""
        answer = self._post("/v2/handshake/create", {"terminal_name": terminal, "sum": amount}, "handshake")
        if not answer.get("thtk"):
            raise PaymentProviderError(PROVIDER, "handshake answer without thtk")
        return str(answer["thtk"])

    def create_payment_request(self, body: dict[str, Any]) -> tuple[str, str]:
        """`POST /v1/pr/create`; returns (pr_id, pr_link)."""
        answer = self._post("/v1/pr/create", body, "payment request")
        if not answer.get("pr_link"):
            raise PaymentProviderError(PROVIDER, "payment request answer without pr_link")
        return str(answer.get("pr_id", "")), str(answer["pr_link"])

    def get_transaction(self, *, terminal: str, index: int) -> Optional[dict[str, Any]]:
        """The terminal's transaction with this index (`POST /v1/transactions`), or None if unknown."""
        answer = self._post(
            "/v1/transactions", {"terminal_name": terminal, "transaction_index": index}, "transaction query"
        )
        for transaction in answer.get("transactions") or []:
            if isinstance(transaction, dict) and str(transaction.get("index")) == str(index):
                return transaction
        return None
